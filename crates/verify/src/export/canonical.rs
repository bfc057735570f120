//! Canonical JSON (docs/export-format.md, section 2): the one spelling of a JSON value
//! that every export line uses, so that a verifier checks a line by rebuilding it and
//! comparing bytes.
//!
//! It is what `serde_json::to_string` writes for a `serde_json::Value` with its object
//! members sorted by their UTF-8 bytes; tests compare the two.

use serde_json::Value;

/// The canonical JSON text of a value: no whitespace, object keys sorted by their UTF-8
/// bytes, strings escaped as `serde_json` does (only `"`, `\` and U+0000–U+001F; `\b \f \n
/// \r \t` short forms, `\u00xx` lowercase otherwise), numbers as `serde_json` writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical JSON text of `value` to `out` (see [`canonical_json`]).
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // A `BTreeMap` already iterates in byte order; an insertion-ordered map may not.
            if !entries.is_sorted_by(|a, b| a.0.as_bytes() <= b.0.as_bytes()) {
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else {
        // Serializing a number to a string cannot fail.
        out.push_str(&serde_json::to_string(n).unwrap_or_default());
    }
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it.
pub fn write_json_str(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    // Most strings need no escape: one branch-free pass to tell.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so a char boundary.
        out.push_str(&text[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

pub(super) fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_escapes_like_serde_json() {
        let value = serde_json::json!({"b": [1, null, true], "a": {"z": "x\n\u{1}\"é—/", "A": 18446744073709551615u64}});
        assert_eq!(
            canonical_json(&value),
            "{\"a\":{\"A\":18446744073709551615,\"z\":\"x\\n\\u0001\\\"é—/\"},\"b\":[1,null,true]}"
        );
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json() {
        let all: String = (0u32..0x90).filter_map(char::from_u32).chain(['é', '\u{2028}', '😀']).collect();
        for text in [all.as_str(), "", "x", "\"", "\\\\", "a\u{1}b"] {
            let mut out = String::new();
            write_json_str(text, &mut out);
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
    }
}
