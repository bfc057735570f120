//! A JSON parser's error message, made safe to answer.
//!
//! serde repeats what it could not take: a string in a field of another type
//! (`invalid type: string "…", expected a sequence`), an unknown variant or field name
//! (``unknown variant `…` ``). A caller who pastes a key secret into the wrong field, or
//! sends an imported key's secret where its hash belongs, would see it in the answer and
//! in every log line that records the answer. docs/security.md ("Secrets in bodies")
//! promises that no secret is ever repeated, and an imported secret has no checksum to
//! recognise it by, so every string value quoted from the body is dropped, and so is the
//! name of an unknown field or variant unless it is written as the API's names are
//! (lowercase letters and `_`: a typo worth showing, never a token). What stays is the
//! field path, the kind of value found, what was expected (the names serde expected are
//! ours) and the position. Anything that still holds a key secret is then redacted as in
//! a URL ([`crate::redact::words`]).

/// `message` (a `serde_json` error's text, possibly behind axum's `path: ` prefix) without
/// the values it quotes from the input.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut dropped_names = Vec::new();
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            // A string value, written escaped (`{:?}`): dropped with the space before it.
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '"' if !escaped => break,
                        '\\' if !escaped => escaped = true,
                        _ => escaped = false,
                    }
                }
                trim_space(&mut out);
            }
            // The name of an unknown variant or field is the input's: kept only if it could
            // be a field name (a typo worth showing), else dropped. The names listed as
            // expected (after it) are ours and stay.
            '`' if out.ends_with("unknown variant ") || out.ends_with("unknown field ") => {
                let name: String = chars.by_ref().take_while(|&c| c != '`').collect();
                if is_plain_name(&name) {
                    out.push('`');
                    out.push_str(&name);
                    out.push('`');
                } else {
                    trim_space(&mut out);
                    dropped_names.push(name);
                }
            }
            c => out.push(c),
        }
    }
    // An unknown field is also the last segment of the field path before the message.
    if !dropped_names.is_empty()
        && let Some((path, rest)) = out.split_once(": ")
    {
        let segments: Vec<&str> = path
            .split('.')
            .map(|segment| if dropped_names.iter().any(|name| name == segment) { "…" } else { segment })
            .collect();
        out = format!("{}: {rest}", segments.join("."));
    }
    crate::redact::words(&out).into_owned()
}

/// Lowercase letters and `_`, as every field name and variant of the API is written: a
/// token or secret (digits, capitals, longer) is not.
fn is_plain_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn trim_space(out: &mut String) {
    if out.ends_with(' ') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        scopes: Vec<String>,
        environment: Option<Environment>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Environment {
        Live,
        Test,
    }

    fn message(json: &str) -> String {
        without_values(&serde_json::from_str::<Body>(json).expect_err("invalid").to_string())
    }

    #[test]
    fn no_value_of_the_body_is_repeated() {
        let value = r#"sk_prod_\"quoted\" and \\ more"#;
        let cases = [
            (format!(r#"{{"scopes": "{value}"}}"#), "invalid type: string, expected a sequence at line 1"),
            (
                format!(r#"{{"scopes": [], "environment": "{value}"}}"#),
                "unknown variant, expected `live` or `test`",
            ),
            (
                format!(r#"{{"scopes": [], "{value}": 1}}"#),
                "unknown field, expected `scopes` or `environment`",
            ),
            (r#"{"scopes": [], "environment": "prod"}"#.to_owned(), "unknown variant `prod`, expected"),
            (r#"{"scopes": [], "colour": 1}"#.to_owned(), "unknown field `colour`, expected"),
            (r#"{"environment": "live"}"#.to_owned(), "missing field `scopes`"),
            (r#"{"scopes": [1]}"#.to_owned(), "invalid type: integer `1`, expected a string"),
        ];
        for (json, expected) in cases {
            let message = message(&json);
            assert!(message.starts_with(expected), "{json}: {message}");
            assert!(!message.contains("sk_prod") && !message.contains("quoted"), "{json}: {message}");
        }
    }

    #[test]
    fn a_key_secret_on_the_field_path_is_redacted() {
        let secret = keyledger_core::Secret::generate(
            &keyledger_core::KeyPrefix::default_prefix(),
            keyledger_core::Environment::Live,
        )
        .expect("entropy");
        let text = format!("metadata.{}: invalid type: string \"x\", expected u8", secret.expose());
        assert_eq!(without_values(&text), "metadata.[redacted]: invalid type: string, expected u8");
    }

    #[test]
    fn an_unknown_field_that_is_no_field_name_leaves_the_path_too() {
        let text = "metadata.Sk_9x: unknown field `Sk_9x`, expected `name`";
        assert_eq!(without_values(text), "metadata.…: unknown field, expected `name`");
        let text = "colour: unknown field `colour`, expected `name`";
        assert_eq!(without_values(text), text);
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        assert_eq!(message("{\"scopes\": [}"), "expected value at line 1 column 13");
    }
}
