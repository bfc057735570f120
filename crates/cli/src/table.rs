//! Human output of the admin commands: aligned tables, key details, relative times and
//! (only on a terminal) ANSI colours.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Parses an RFC 3339 time as the server writes it.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// "just now", "5 minutes ago", "3 days ago", "in 2 hours"…
pub fn relative_time(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = now.signed_duration_since(then).num_seconds();
    let (amount, future) =
        if seconds < 0 { (seconds.unsigned_abs(), true) } else { (seconds.unsigned_abs(), false) };
    if amount < 10 {
        return "just now".to_owned();
    }
    let (count, unit) = match amount {
        s if s < 60 => (s, "second"),
        s if s < 3_600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3_600, "hour"),
        s if s < 30 * 86_400 => (s / 86_400, "day"),
        s if s < 365 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    let plural = if count == 1 { "" } else { "s" };
    if future { format!("in {count} {unit}{plural}") } else { format!("{count} {unit}{plural} ago") }
}

/// `relative_time` of an optional RFC 3339 field; `none` when absent, the raw text when
/// it does not parse.
fn relative_field(value: &Value, now: DateTime<Utc>, none: &str) -> String {
    match value.as_str() {
        None => none.to_owned(),
        Some(text) => parse_time(text).map_or_else(|| text.to_owned(), |t| relative_time(t, now)),
    }
}

/// ANSI styling, or none of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colours only when stdout is a terminal and `NO_COLOR` is not set.
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        Style {
            color: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    #[cfg(test)]
    pub const PLAIN: Style = Style { color: false };

    fn paint(self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn warn(self, text: &str) -> String {
        self.paint("1;33", text)
    }

    /// A key status: active green, revoked red, expired and disabled yellow.
    pub fn status(self, status: &str) -> String {
        match status {
            "active" => self.paint("32", status),
            "revoked" => self.paint("31", status),
            "expired" | "disabled" => self.paint("33", status),
            other => other.to_owned(),
        }
    }
}

/// Display width of a cell (characters; keyledger's fields are mostly ASCII).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// Shortens `text` to at most `max` characters, ending with `…` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A cell: its plain text (for alignment) and what is printed (maybe coloured).
#[derive(Clone, Debug)]
pub struct Cell {
    text: String,
    shown: String,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Self {
        let text = text.into();
        Cell { shown: text.clone(), text }
    }

    pub fn styled(text: impl Into<String>, paint: impl FnOnce(&str) -> String) -> Self {
        let text = text.into();
        Cell { shown: paint(&text), text }
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<Cell>], style: Style) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(width(&cell.text));
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<(String, usize)>| {
        let mut text = String::new();
        for (i, (shown, plain_width)) in cells.into_iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(&shown);
            if i + 1 < columns {
                text.push_str(&" ".repeat(widths[i].saturating_sub(plain_width)));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (style.bold(h), width(h))).collect());
    for row in rows {
        line(row.iter().take(columns).map(|c| (c.shown.clone(), width(&c.text))).collect());
    }
    out
}

fn text<'a>(key: &'a Value, field: &str) -> &'a str {
    key.get(field).and_then(Value::as_str).unwrap_or("")
}

fn list(key: &Value, field: &str) -> Vec<String> {
    key.get(field)
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect())
        .unwrap_or_default()
}

/// "5 minutes ago from 10.0.0.7", or "never".
fn last_used(key: &Value, now: DateTime<Utc>) -> String {
    let when = relative_field(&key["last_used_at"], now, "never");
    match key.get("last_used_ip").and_then(Value::as_str) {
        Some(ip) if key["last_used_at"].is_string() => format!("{when} from {ip}"),
        _ => when,
    }
}

/// The table of `keyledger keys list`.
pub fn keys_table(keys: &[Value], now: DateTime<Utc>, style: Style) -> String {
    if keys.is_empty() {
        return "no keys\n".to_owned();
    }
    let headers = ["KEY ID", "NAME", "HINT", "ENV", "STATUS", "SCOPES", "CREATED", "LAST USED", "USES"];
    let rows: Vec<Vec<Cell>> = keys
        .iter()
        .map(|key| {
            let scopes = list(key, "scopes");
            vec![
                Cell::plain(text(key, "key_id")),
                Cell::plain(ellipsize(text(key, "name"), 32)),
                Cell::plain(text(key, "hint")),
                Cell::plain(text(key, "environment")),
                Cell::styled(text(key, "status"), |s| style.status(s)),
                Cell::plain(if scopes.is_empty() {
                    "-".to_owned()
                } else {
                    ellipsize(&scopes.join(","), 40)
                }),
                Cell::plain(relative_field(&key["created_at"], now, "-")),
                Cell::plain(last_used(key, now)),
                Cell::plain(key.get("use_count").and_then(Value::as_u64).unwrap_or(0).to_string()),
            ]
        })
        .collect();
    render(&headers, &rows, style)
}

/// "2025-01-01T00:00:00Z (3 days ago)", or `none`.
fn time_detail(value: &Value, now: DateTime<Utc>, none: &str) -> String {
    match value.as_str() {
        None => none.to_owned(),
        Some(text) => match parse_time(text) {
            Some(t) => format!("{text} ({})", relative_time(t, now)),
            None => text.to_owned(),
        },
    }
}

fn or_dash(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The details of one key (`keys show`, and after create/update/revoke…).
pub fn key_details(key: &Value, now: DateTime<Utc>, style: Style) -> String {
    let join = |field: &str, empty: &str| {
        let items = list(key, field);
        if items.is_empty() { empty.to_owned() } else { items.join(", ") }
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("key id", text(key, "key_id").to_owned()),
        ("workspace", text(key, "workspace").to_owned()),
        ("name", text(key, "name").to_owned()),
        ("hint", text(key, "hint").to_owned()),
        ("environment", text(key, "environment").to_owned()),
        ("status", style.status(text(key, "status"))),
        ("scopes", join("scopes", "-")),
        ("resources", join("resources", "all")),
        (
            "sources",
            match key["allowed_sources_from"].as_str() {
                Some("policy") => format!("{} (workspace default)", join("allowed_sources", "any")),
                _ => join("allowed_sources", "any"),
            },
        ),
        ("owner", or_dash(&key["owner"])),
        (
            "metadata",
            match &key["metadata"] {
                Value::Object(m) if m.is_empty() => "-".to_owned(),
                other => or_dash(other),
            },
        ),
        (
            "created",
            format!("{} by {}", time_detail(&key["created_at"], now, "-"), or_dash(&key["created_by"])),
        ),
        ("expires", time_detail(&key["expires_at"], now, "never")),
        ("last used", last_used(key, now)),
        ("uses", key.get("use_count").and_then(Value::as_u64).unwrap_or(0).to_string()),
    ];
    if !key["revoked_at"].is_null() {
        let reason = key["revoked_reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
        rows.push(("revoked", format!("{}{reason}", time_detail(&key["revoked_at"], now, "-"))));
    }
    if let Some(reason) = key.get("disabled_reason").and_then(Value::as_str) {
        rows.push(("disabled", reason.to_owned()));
    }
    if let Some(from) = key["rotated_from"].as_str() {
        rows.push(("rotated from", from.to_owned()));
    }
    if let Some(to) = key["rotated_to"].as_str() {
        rows.push(("rotated to", to.to_owned()));
    }
    if let Some(credits) = crate::credits::detail(key) {
        rows.push(("credits", credits));
    }
    if let Some(limits) = crate::ratelimits::detail(key) {
        rows.push(("rate limits", limits));
    }
    fields(&rows, style)
}

/// `label:  value` lines with the values aligned.
pub fn fields(rows: &[(&str, String)], style: Style) -> String {
    let label_width = rows.iter().map(|(label, _)| width(label) + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let label = format!("{label}:");
        let pad = " ".repeat(label_width - width(&label) + 2);
        out.push_str(&format!("{}{pad}{value}\n", style.dim(&label)));
    }
    out
}

/// A workspace policy (`policy get|set`).
pub fn policy_details(policy: &Value, style: Style) -> String {
    let unset = |field: &str, none: &str| match &policy[field] {
        Value::Null => none.to_owned(),
        other => or_dash(other),
    };
    let rows = vec![
        ("workspace", unset("workspace", "-")),
        ("max active keys", unset("max_active_keys", "unlimited")),
        ("require expiry", unset("require_expiry", "false")),
        ("max lifetime", unset("max_lifetime", "unlimited")),
        ("key prefix", unset("key_prefix", "kl (default)")),
        ("allowed sources", {
            let sources = list(policy, "allowed_sources");
            if sources.is_empty() { "none".to_owned() } else { sources.join(", ") }
        }),
        (
            "require sources",
            match policy["require_allowed_sources"].as_bool() {
                Some(true) => format!(
                    "true ({} live keys without one)",
                    policy["allowed_sources_exception_count"].as_u64().unwrap_or(0)
                ),
                _ => "false".to_owned(),
            },
        ),
        ("on leak", unset("on_leak", "notify")),
        ("rate limits", crate::ratelimits::detail(policy).unwrap_or_else(|| "none".to_owned())),
    ];
    fields(&rows, style)
}

/// A webhook's configuration.
pub fn webhook_details(webhook: &Value, style: Style) -> String {
    let events = list(webhook, "events");
    let rows = vec![
        ("workspace", or_dash(&webhook["workspace"])),
        ("url", or_dash(&webhook["url"])),
        ("events", if events.is_empty() { "all".to_owned() } else { events.join(", ") }),
        ("enabled", or_dash(&webhook["enabled"])),
        ("updated at", or_dash(&webhook["updated_at"])),
        ("updated by", or_dash(&webhook["updated_by"])),
    ];
    fields(&rows, style)
}

/// A webhook's delivery attempts, newest first, and how many wait.
pub fn deliveries_table(answer: &Value, now: DateTime<Utc>, style: Style) -> String {
    let pending = answer.get("pending").and_then(Value::as_u64).unwrap_or(0);
    let attempts = answer.get("attempts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let footer = format!("{pending} waiting for delivery\n");
    if attempts.is_empty() {
        return format!("no delivery attempts\n{footer}");
    }
    let headers = ["AT", "DELIVERY", "TYPE", "ATTEMPT", "STATUS", "OUTCOME", "NEXT RETRY"];
    let rows: Vec<Vec<Cell>> = attempts
        .iter()
        .map(|a| {
            let status = match (&a["status"], a["error"].as_str()) {
                (Value::Number(n), _) => n.to_string(),
                (_, Some(error)) => ellipsize(error, 40),
                _ => "-".to_owned(),
            };
            vec![
                Cell::plain(relative_field(&a["at"], now, "-")),
                Cell::plain(text(a, "delivery_id")),
                Cell::plain(text(a, "type")),
                Cell::plain(or_dash(&a["attempt"])),
                Cell::plain(status),
                Cell::plain(text(a, "outcome")),
                Cell::plain(relative_field(&a["next_retry_at"], now, "-")),
            ]
        })
        .collect();
    format!("{}{footer}", render(&headers, &rows, style))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).expect("time")
    }

    #[test]
    fn relative_times() {
        let now = Utc.with_ymd_and_hms(2025, 6, 15, 12, 0, 0).single().expect("now");
        let ago = |seconds: i64| relative_time(now - chrono::Duration::seconds(seconds), now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(9), "just now");
        assert_eq!(ago(-5), "just now");
        assert_eq!(ago(10), "10 seconds ago");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(5 * 60 + 59), "5 minutes ago");
        assert_eq!(ago(3_600), "1 hour ago");
        assert_eq!(ago(23 * 3_600), "23 hours ago");
        assert_eq!(ago(86_400), "1 day ago");
        assert_eq!(ago(3 * 86_400 + 100), "3 days ago");
        assert_eq!(ago(29 * 86_400), "29 days ago");
        assert_eq!(ago(60 * 86_400), "2 months ago");
        assert_eq!(ago(400 * 86_400), "1 year ago");
        assert_eq!(ago(-2 * 3_600), "in 2 hours");
        assert_eq!(ago(-90 * 86_400), "in 3 months");
        assert_eq!(ago(-86_400), "in 1 day");
    }

    #[test]
    fn server_times_parse() {
        let t = at("2025-06-15T11:55:00.123456Z");
        assert_eq!(
            t.timestamp(),
            Utc.with_ymd_and_hms(2025, 6, 15, 11, 55, 0).single().expect("t").timestamp()
        );
        assert!(parse_time("yesterday").is_none());
        assert_eq!(relative_field(&json!("yesterday"), t, "-"), "yesterday");
        assert_eq!(relative_field(&Value::Null, t, "never"), "never");
    }

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let rows = vec![
            vec![Cell::plain("a"), Cell::plain("longer"), Cell::plain("x")],
            vec![Cell::plain("abcd"), Cell::plain("b"), Cell::plain("yy")],
        ];
        let out = render(&["H1", "H2", "H3"], &rows, Style::PLAIN);
        assert_eq!(out, "H1    H2      H3\na     longer  x\nabcd  b       yy\n");
    }

    #[test]
    fn colours_do_not_break_alignment() {
        let style = Style { color: true };
        let rows = vec![
            vec![Cell::styled("active", |s| style.status(s)), Cell::plain("1")],
            vec![Cell::styled("revoked", |s| style.status(s)), Cell::plain("2")],
        ];
        let out = render(&["STATUS", "N"], &rows, style);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "\x1b[32mactive\x1b[0m   1");
        assert_eq!(lines[2], "\x1b[31mrevoked\x1b[0m  2");
        assert_eq!(Style::PLAIN.status("revoked"), "revoked");
        assert_eq!(style.status("expired"), "\x1b[33mexpired\x1b[0m");
    }

    fn key(now: DateTime<Utc>) -> Value {
        json!({
            "key_id": "key_01jz00000000000000000000aa", "workspace": "acme", "name": "CI deploy",
            "hint": "kl_live_…Ab12", "scopes": ["read", "write"], "resources": [], "environment": "live",
            "owner": null, "metadata": {}, "status": "active",
            "created_at": (now - chrono::Duration::days(3)).to_rfc3339(), "created_by": "admin:key_x",
            "expires_at": null, "revoked_at": null, "revoked_reason": null, "rotated_from": null, "rotated_to": null,
            "last_used_at": (now - chrono::Duration::minutes(5)).to_rfc3339(), "last_used_ip": "10.0.0.7", "use_count": 42,
        })
    }

    #[test]
    fn key_tables_show_relative_times_and_last_use() {
        let now = at("2025-06-15T12:00:00Z");
        let mut unused = key(now);
        unused["key_id"] = json!("key_2");
        unused["status"] = json!("revoked");
        unused["last_used_at"] = Value::Null;
        unused["last_used_ip"] = Value::Null;
        unused["use_count"] = json!(0);
        unused["scopes"] = json!([]);
        let out = keys_table(&[key(now), unused], now, Style::PLAIN);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("KEY ID"), "{out}");
        assert!(lines[1].contains("3 days ago"), "{out}");
        assert!(lines[1].contains("5 minutes ago from 10.0.0.7"), "{out}");
        assert!(lines[1].ends_with("42"), "{out}");
        assert!(lines[1].contains("read,write"), "{out}");
        assert!(lines[2].contains("never"), "{out}");
        assert!(lines[2].contains("revoked"), "{out}");
        // Columns line up: STATUS starts at the same offset on every line.
        // (In characters: the hint's `…` is wider in bytes.)
        let column = |line: &str, needle: &str| line.find(needle).map(|at| line[..at].chars().count());
        assert_eq!(column(lines[1], "active"), column(lines[0], "STATUS"));
        assert_eq!(column(lines[2], "revoked"), column(lines[0], "STATUS"));
        assert!(!out.contains('\x1b'));
        assert_eq!(keys_table(&[], now, Style::PLAIN), "no keys\n");
    }

    #[test]
    fn key_details_list_every_field() {
        let now = at("2025-06-15T12:00:00Z");
        let mut k = key(now);
        k["revoked_at"] = json!("2025-06-15T11:00:00Z");
        k["revoked_reason"] = json!("leaked");
        k["rotated_to"] = json!("key_next");
        let out = key_details(&k, now, Style::PLAIN);
        assert!(out.contains("key id:       key_01jz"), "{out}");
        assert!(out.contains("resources:    all"), "{out}");
        assert!(out.contains("expires:      never"), "{out}");
        assert!(out.contains("revoked:      2025-06-15T11:00:00Z (1 hour ago): leaked"), "{out}");
        assert!(out.contains("rotated to:   key_next"), "{out}");
        assert!(out.contains("last used:    5 minutes ago from 10.0.0.7"), "{out}");
        assert!(out.contains("sources:      any"), "{out}");
        k["allowed_sources"] = json!(["10.0.0.0/8", "192.0.2.7"]);
        k["allowed_sources_from"] = json!("policy");
        let out = key_details(&k, now, Style::PLAIN);
        assert!(out.contains("sources:      10.0.0.0/8, 192.0.2.7 (workspace default)"), "{out}");
    }

    #[test]
    fn policies_show_defaults() {
        let out = policy_details(
            &json!({"workspace": "acme", "max_active_keys": 2, "require_expiry": true, "max_lifetime": "90d", "key_prefix": null}),
            Style::PLAIN,
        );
        assert!(out.contains("max active keys:  2"), "{out}");
        assert!(out.contains("max lifetime:     90d"), "{out}");
        assert!(out.contains("key prefix:       kl (default)"), "{out}");
        assert!(out.contains("allowed sources:  none"), "{out}");
        assert!(out.contains("require sources:  false"), "{out}");
        assert!(out.contains("on leak:          notify"), "{out}");
        assert!(out.contains("rate limits:      none"), "{out}");
        let out = policy_details(
            &json!({"workspace": "acme", "allowed_sources": ["10.0.0.0/8"], "require_allowed_sources": true,
                    "allowed_sources_exception_count": 3, "on_leak": "revoke",
                    "ratelimits": [{"name": "api", "limit": 100, "duration": "1m", "auto_apply": true}]}),
            Style::PLAIN,
        );
        assert!(out.contains("on leak:          revoke"), "{out}");
        assert!(out.contains("allowed sources:  10.0.0.0/8"), "{out}");
        assert!(out.contains("require sources:  true (3 live keys without one)"), "{out}");
        assert!(out.contains("rate limits:      api=100/1m"), "{out}");
    }

    #[test]
    fn long_text_is_ellipsized() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("abcdefghijkl", 5), "abcd…");
        assert_eq!(width(&ellipsize(&"é".repeat(50), 32)), 32);
    }
}
