//! A JSON parser's error message, made safe to answer.
//!
//! serde repeats what it could not take: a string in a field of another type
//! (`invalid type: string "…", expected a sequence`), a number (``integer `…` ``), an
//! unknown variant or field name
//! (``unknown variant `…` ``). A caller who pastes a key secret into the wrong field, or
//! sends an imported key's secret where its hash belongs, would see it in the answer and
//! in every log line that records the answer. docs/security.md ("Secrets in bodies")
//! promises that no secret is ever repeated, and an imported secret has no checksum to
//! recognise it by, so every string, number or boolean quoted from the body is dropped, and so is the
//! name of an unknown field or variant unless it is written as the API's names are
//! (lowercase letters and `_`: a typo worth showing, never a token). What stays is the
//! field path, the kind of value found, what was expected (the names serde expected are
//! ours) and the position. The field path is built from its segments ([`path`]), a map's
//! keys (the input's) shown by the same rule. Anything that still holds a key secret is
//! then redacted as in a URL ([`crate::redact::words`]).

/// `message` (a `serde_json` error's text) without the values it quotes from the input.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            // A string value, written escaped (`{:?}`): dropped with the space before it.
            '"' => {
                let mut escaped = false;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| match c {
                        '"' if !escaped => true,
                        '\\' if !escaped => {
                            escaped = true;
                            false
                        }
                        _ => {
                            escaped = false;
                            false
                        }
                    })
                    .map_or(rest.len(), |(at, _)| at + 1);
                rest = &rest[end..];
                trim_space(&mut out);
            }
            // The name of an unknown variant or field is the input's, written unescaped: it
            // ends where the names serde expected (ours) begin. Kept only if it could be a
            // field name (a typo worth showing); without that end, the rest is dropped.
            '`' if out.ends_with("unknown variant ") || out.ends_with("unknown field ") => {
                let end =
                    ["`, expected ", "`, there are no "].iter().filter_map(|tail| rest.rfind(tail)).max();
                let Some(end) = end else {
                    trim_space(&mut out);
                    break;
                };
                let name = &rest[..end];
                if is_plain_name(name) {
                    out.push('`');
                    out.push_str(name);
                    out.push('`');
                } else {
                    trim_space(&mut out);
                }
                rest = &rest[end + 1..];
            }
            // A number or boolean of the body (`integer `4111…``): dropped like a string.
            '`' if ["integer ", "floating point ", "boolean "].iter().any(|kind| out.ends_with(kind)) => {
                rest = rest.find('`').map_or("", |end| &rest[end + 1..]);
                trim_space(&mut out);
            }
            c => out.push(c),
        }
    }
    crate::redact::words(&out).into_owned()
}

/// A JSON body's failing field path as docs/api.md shows it (`keys[3].scopes`), each map
/// key or variant shown only if it could be a field name (`…` otherwise: a map's keys are
/// the input's, e.g. `metadata`'s).
pub fn path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        let name = match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } => key.as_str(),
            Segment::Enum { variant } => variant.as_str(),
            Segment::Unknown => "?",
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(if is_plain_name(name) || name == "?" { name } else { "…" });
    }
    out
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
            (r#"{"scopes": [4111111111111111]}"#.to_owned(), "invalid type: integer, expected a string"),
            (r#"{"scopes": [true]}"#.to_owned(), "invalid type: boolean, expected a string"),
        ];
        for (json, expected) in cases {
            let message = message(&json);
            assert!(message.starts_with(expected), "{json}: {message}");
            assert!(!message.contains("sk_prod") && !message.contains("quoted"), "{json}: {message}");
            assert!(!message.contains("4111"), "{json}: {message}");
        }
    }

    #[test]
    fn a_key_secret_left_in_the_text_is_redacted() {
        let secret = keyledger_core::Secret::generate(
            &keyledger_core::KeyPrefix::default_prefix(),
            keyledger_core::Environment::Live,
        )
        .expect("entropy");
        let text = format!("invalid length {}, expected 2", secret.expose());
        assert_eq!(without_values(&text), "invalid length [redacted], expected 2");
    }

    #[test]
    fn an_unknown_name_ends_where_the_expected_names_begin() {
        for name in ["a`ghp_9xQ", "X\"ghp_9xQ", "eyJh.eyJz.Sfl", "a`, expected `b` ghp_9xQ"] {
            let text = format!("unknown field `{name}`, expected one of `key`, `scopes`");
            let message = without_values(&text);
            assert_eq!(message, "unknown field, expected one of `key`, `scopes`", "{name}");
        }
        // No end in sight: the rest is dropped.
        assert_eq!(without_values("unknown variant `ghp_9xQ"), "unknown variant");
        assert_eq!(
            without_values("unknown field `x`, there are no fields"),
            "unknown field `x`, there are no fields"
        );
    }

    #[test]
    fn map_keys_on_the_path_are_shown_only_if_they_could_be_field_names() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            metadata: std::collections::BTreeMap<String, u8>,
            keys: Vec<Body>,
        }
        let failing = |json: &str| {
            let mut deserializer = serde_json::Deserializer::from_str(json);
            let error = serde_path_to_error::deserialize::<_, Outer>(&mut deserializer).expect_err("invalid");
            (path(error.path()), without_values(&error.inner().to_string()))
        };
        let (at, message) = failing(r#"{"metadata": {"ghp_9x.Q\"z": "v"}, "keys": []}"#);
        assert_eq!(at, "metadata.…");
        assert!(message.starts_with("invalid type: string, expected u8"), "{message}");
        let (at, _) = failing(r#"{"metadata": {"team": 300}, "keys": []}"#);
        assert_eq!(at, "metadata.team");
        let (at, message) = failing(r#"{"metadata": {}, "keys": [{"scopes": []}, {"scopes": "x"}]}"#);
        assert_eq!(at, "keys[1].scopes");
        assert!(message.starts_with("invalid type: string, expected a sequence"), "{message}");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        assert_eq!(message("{\"scopes\": [}"), "expected value at line 1 column 13");
    }
}
