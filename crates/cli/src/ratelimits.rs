//! `--rate-limit name=limit/duration` (e.g. `api=100/1m`) for `keys create` and `keys update`:
//! the notation is parsed and checked by keyledger-core (the server checks the list again),
//! so a bad one is a usage error before any request (docs/api.md, "Rate limits").

use serde_json::Value;

/// Parses one `--rate-limit` into a `ratelimits` entry of the create/PATCH body.
pub fn rate_limit(text: &str) -> Result<Value, String> {
    let limit = keyledger_core::ratelimit::parse_notation(text).map_err(|e| format!("`{text}`: {e}"))?;
    let list = keyledger_core::ratelimit::limits_json(std::slice::from_ref(&limit));
    list.as_array().and_then(|a| a.first().cloned()).ok_or_else(|| format!("`{text}` gave no limit"))
}

/// The key view's limits in the CLI notation (`api=100/1m, heavy=5/1h (named)`), marked
/// when they are the workspace default; `None` without limits.
pub fn detail(key: &Value) -> Option<String> {
    let list = key["ratelimits"].as_array().filter(|l| !l.is_empty())?;
    let shown: Vec<String> = list
        .iter()
        .map(|l| {
            let named = if l["auto_apply"] == Value::Bool(false) { " (named)" } else { "" };
            format!(
                "{}={}/{}{named}",
                l["name"].as_str().unwrap_or("?"),
                l["limit"],
                l["duration"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let from = if key["ratelimits_from"] == "policy" { " (workspace default)" } else { "" };
    Some(format!("{}{from}", shown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_notation_becomes_a_body_entry_or_a_usage_error() {
        assert_eq!(
            rate_limit("api=100/1m").unwrap(),
            json!({"name": "api", "limit": 100, "duration": "1m", "auto_apply": true})
        );
        for bad in ["api", "api=0/1m", "API=1/1m", "api=1/31d", "api=1/é"] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
        let key = json!({"ratelimits": [rate_limit("api=100/1m").unwrap(),
            {"name": "heavy", "limit": 5, "duration": "1h", "auto_apply": false}], "ratelimits_from": "policy"});
        assert_eq!(detail(&key).as_deref(), Some("api=100/1m, heavy=5/1h (named) (workspace default)"));
        assert_eq!(detail(&json!({"ratelimits": []})), None);
    }
}
