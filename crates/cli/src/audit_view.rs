//! How `keyledger audit` shows the server's audit answers to a person: tables of a key's
//! events, the leak report, a request's events, the keys used from a source, the keys
//! valid at an instant, hygiene, a lookup's answer and a written proof (`--json` prints the
//! server's JSON instead, docs/api.md "Audit").

use crate::table::{self, Cell, Style};
use chrono::{DateTime, Utc};
use serde_json::Value;

pub(crate) fn prove_view(written: &Value) -> String {
    format!(
        "wrote the proof of event {} ({}) in the checkpoint of {} events to {}; check it with `keyledger proof verify {} --public-key {}`\n",
        number(written, "seq"),
        text(written, "kind"),
        number(written, "checkpoint_size"),
        text(written, "out"),
        text(written, "out"),
        text(written, "public_key"),
    )
}

pub(crate) fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

fn number(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn array<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// A server time to the second (`2025-06-15 12:00:00Z`); `-` when absent.
fn when(value: &Value) -> String {
    match value.as_str() {
        None => "-".to_owned(),
        Some(raw) => table::parse_time(raw)
            .map_or_else(|| raw.to_owned(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
    }
}

/// A server time with how long ago it was.
fn when_relative(value: &Value, now: DateTime<Utc>) -> String {
    match value.as_str().and_then(table::parse_time) {
        Some(t) => format!("{} ({})", when(value), table::relative_time(t, now)),
        None => when(value),
    }
}

fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn dash(text: &str) -> String {
    if text.is_empty() { "-".to_owned() } else { text.to_owned() }
}

/// What an event says beyond its kind: the denial reason, the rotation, the revocation…
fn event_detail(event: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(reason) = event.get("reason").and_then(Value::as_str) {
        parts.push(reason.to_owned());
    }
    if let Some(detail) = event.get("detail").and_then(Value::as_str)
        && !detail.is_empty()
    {
        parts.push(detail.to_owned());
    }
    if let Some(to) = event.get("rotated_to").and_then(Value::as_str) {
        parts.push(format!("to {to}"));
    }
    if let Some(from) = event.get("rotated_from").and_then(Value::as_str) {
        parts.push(format!("from {from}"));
    }
    if let Some(until) = event.get("valid_until").and_then(Value::as_str) {
        parts.push(format!("old key valid until {until}"));
    }
    table::ellipsize(&parts.join("; "), 60)
}

fn events_table(events: &[Value], style: Style) -> String {
    if events.is_empty() {
        return "no events\n".to_owned();
    }
    let headers = ["SEQ", "AT", "KIND", "ACTOR", "SOURCE", "USER AGENT", "PATH", "DETAIL"];
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .map(|event| {
            let context = &event["context"];
            let kind = text(event, "kind");
            vec![
                Cell::plain(event["seq"].as_u64().map_or_else(String::new, |s| s.to_string())),
                Cell::plain(when(&event["at"])),
                match kind {
                    "denied" | "revoked" => Cell::styled(kind, |k| style.warn(k)),
                    _ => Cell::plain(kind),
                },
                Cell::plain(dash(text(event, "actor"))),
                Cell::plain(dash(text(context, "ip"))),
                Cell::plain(dash(&table::ellipsize(text(context, "user_agent"), 32))),
                Cell::plain(dash(&table::ellipsize(text(context, "path"), 40))),
                Cell::plain(dash(&event_detail(event))),
            ]
        })
        .collect();
    table::render(&headers, &rows, style)
}

pub(crate) fn events_view(answer: &Value, style: Style) -> String {
    let mut out = events_table(array(answer, "events"), style);
    match &answer["next_cursor"] {
        Value::Null => {}
        next => {
            let next = next.as_str().map_or_else(|| next.to_string(), str::to_owned);
            out.push_str(&format!("\nmore events: --cursor {next} (or --all)\n"));
        }
    }
    out
}

/// Sources or user agents of a report, NEW marked when `mark_new`.
fn values_table(label: &str, stats: &[Value], mark_new: bool, style: Style) -> String {
    if stats.is_empty() {
        return "none\n".to_owned();
    }
    let mut headers = vec![label];
    if mark_new {
        headers.push("NEW");
    }
    headers.extend(["USES", "ALLOWED", "DENIED", "FIRST SEEN", "LAST SEEN"]);
    let rows: Vec<Vec<Cell>> = stats
        .iter()
        .map(|stat| {
            let mut row = vec![Cell::plain(table::ellipsize(text(stat, "value"), 60))];
            if mark_new {
                row.push(if stat["new_since"] == Value::Bool(true) {
                    Cell::styled("NEW", |t| style.warn(t))
                } else {
                    Cell::plain("-")
                });
            }
            row.extend([
                Cell::plain(number(stat, "count").to_string()),
                Cell::plain(number(stat, "allowed").to_string()),
                Cell::plain(number(stat, "denied").to_string()),
                Cell::plain(when(&stat["first_seen"])),
                Cell::plain(when(&stat["last_seen"])),
            ]);
            row
        })
        .collect();
    table::render(&headers, &rows, style)
}

fn lifecycle_table(events: &[Value], style: Style) -> String {
    if events.is_empty() {
        return "none\n".to_owned();
    }
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .map(|event| {
            vec![
                Cell::plain(when(&event["at"])),
                Cell::plain(text(event, "kind")),
                Cell::plain(dash(text(event, "actor"))),
                Cell::plain(dash(text(event, "request_id"))),
                Cell::plain(dash(&event_detail(event))),
            ]
        })
        .collect();
    table::render(&["AT", "EVENT", "ACTOR", "REQUEST ID", "DETAIL"], &rows, style)
}

/// The leak report (`audit compromise`, and the report of `audit lookup`).
pub(crate) fn report_view(report: &Value, now: DateTime<Utc>, style: Style) -> String {
    let key = &report["key"];
    let window = &report["window"];
    let windowed = window["since"].is_string();
    let mut out = format!(
        "Leak report of key {} ({}, workspace {}): {}\n",
        text(key, "key_id"),
        text(key, "name"),
        text(key, "workspace"),
        style.status(text(key, "status"))
    );
    if windowed {
        out.push_str(&format!("window: {} to {}\n", when(&window["since"]), when(&window["until"])));
    } else {
        out.push_str(&format!("window: the key's whole life, to {}\n", when(&window["until"])));
    }
    out.push_str(&format!("\n{}\n", style.bold("Key")));
    out.push_str(&table::key_details(key, now, style));

    out.push_str(&format!("\n{}\n", style.bold("Lifecycle")));
    out.push_str(&lifecycle_table(array(report, "lifecycle"), style));

    let uses = &report["uses"];
    out.push_str(&format!(
        "\n{} {} allowed, {} denied; first {}, last {}\n",
        style.bold("Uses in the window:"),
        number(uses, "allowed"),
        number(uses, "denied"),
        when_relative(&uses["first"], now),
        when_relative(&uses["last"], now),
    ));

    let sources = array(report, "sources");
    let agents = array(report, "user_agents");
    let new = |stats: &[Value]| stats.iter().filter(|s| s["new_since"] == Value::Bool(true)).count();
    let new_note = |stats: &[Value]| {
        if windowed { format!(", {} new since the window's start", new(stats)) } else { String::new() }
    };
    out.push_str(&format!("\n{} ({}{})\n", style.bold("Sources"), sources.len(), new_note(sources)));
    out.push_str(&values_table("ADDRESS", sources, windowed, style));
    out.push_str(&format!("\n{} ({}{})\n", style.bold("User agents"), agents.len(), new_note(agents)));
    out.push_str(&values_table("USER AGENT", agents, windowed, style));

    let paths = array(report, "paths");
    out.push_str(&format!("\n{}\n", style.bold("Paths")));
    if paths.is_empty() {
        out.push_str("none\n");
    } else {
        let rows: Vec<Vec<Cell>> = paths
            .iter()
            .map(|p| {
                vec![
                    Cell::plain(table::ellipsize(text(p, "value"), 80)),
                    Cell::plain(number(p, "count").to_string()),
                ]
            })
            .collect();
        out.push_str(&table::render(&["PATH", "USES"], &rows, style));
    }

    let after = &report["after_revocation"];
    out.push('\n');
    match after["since"].as_str() {
        None => out.push_str(&format!("{} not revoked or expired\n", style.bold("After revocation:"))),
        Some(_) => {
            let count = number(after, "count");
            let line = format!(
                "{} {} since {}",
                style.bold("After revocation or expiry:"),
                plural(count, "attempt", "attempts"),
                when(&after["since"])
            );
            if count == 0 {
                out.push_str(&format!("{line}\n"));
            } else {
                out.push_str(&format!(
                    "{line}; first {}, last {}\n",
                    when_relative(&after["first"], now),
                    when_relative(&after["last"], now)
                ));
                out.push_str(&values_table("ADDRESS", array(after, "sources"), false, style));
            }
        }
    }
    out
}

pub(crate) fn lookup_view(answer: &Value, now: DateTime<Utc>, style: Style) -> String {
    format!(
        "{} is key {} of workspace {} ({}).\n\n{}",
        style.warn("This secret"),
        text(answer, "key_id"),
        text(answer, "workspace"),
        style.status(text(answer, "status")),
        report_view(&answer["report"], now, style)
    )
}

pub(crate) fn request_view(answer: &Value, now: DateTime<Utc>, style: Style) -> String {
    let events = array(answer, "events");
    let mut out = format!(
        "Request {}: {}\n\n",
        text(answer, "request_id"),
        plural(events.len() as u64, "event", "events")
    );
    out.push_str(&events_table(events, style));
    for key in array(answer, "keys") {
        out.push_str(&format!("\n{}\n", style.bold("Key")));
        out.push_str(&table::key_details(key, now, style));
    }
    out
}

pub(crate) fn sources_view(answer: &Value, style: Style) -> String {
    let keys = array(answer, "keys");
    let source = text(answer, "source");
    if keys.is_empty() {
        return format!("no key was used from {source}\n");
    }
    let mut out = format!("Keys used from {source}: {}\n\n", keys.len());
    let rows: Vec<Vec<Cell>> = keys
        .iter()
        .map(|k| {
            vec![
                Cell::plain(text(k, "key_id")),
                Cell::plain(text(k, "workspace")),
                Cell::plain(number(k, "count").to_string()),
                Cell::plain(number(k, "allowed").to_string()),
                Cell::plain(number(k, "denied").to_string()),
                Cell::plain(when(&k["first_seen"])),
                Cell::plain(when(&k["last_seen"])),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["KEY ID", "WORKSPACE", "USES", "ALLOWED", "DENIED", "FIRST SEEN", "LAST SEEN"],
        &rows,
        style,
    ));
    out
}

pub(crate) fn active_view(answer: &Value, style: Style) -> String {
    let keys = array(answer, "keys");
    let mut out = format!(
        "Keys of workspace {} valid at {}: {}\n",
        text(answer, "workspace"),
        when(&answer["active_at"]),
        keys.len()
    );
    if keys.is_empty() {
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<Cell>> = keys
        .iter()
        .map(|k| {
            let scopes: Vec<&str> = array(k, "scopes").iter().filter_map(Value::as_str).collect();
            vec![
                Cell::plain(text(k, "key_id")),
                Cell::plain(table::ellipsize(text(k, "name"), 32)),
                Cell::plain(text(k, "hint")),
                Cell::plain(text(k, "environment")),
                Cell::plain(if scopes.is_empty() {
                    "-".to_owned()
                } else {
                    table::ellipsize(&scopes.join(","), 40)
                }),
                Cell::plain(when(&k["created_at"])),
                Cell::plain(when(&k["expires_at"])),
                Cell::plain(when(&k["revoked_at"])),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["KEY ID", "NAME", "HINT", "ENV", "SCOPES", "CREATED", "EXPIRES", "REVOKED"],
        &rows,
        style,
    ));
    out
}

pub(crate) fn hygiene_view(
    answer: &Value,
    (unused_for, older_than): (&str, &str),
    now: DateTime<Utc>,
    style: Style,
) -> String {
    let sections = [
        ("never_used", "Never used".to_owned()),
        ("unused", format!("Not used for {unused_for}")),
        ("no_expiry", "No expiry".to_owned()),
        ("older_than", format!("Created more than {older_than} ago")),
        ("expiring_within_7d", "Expiring within 7 days".to_owned()),
    ];
    let mut out = format!("Key hygiene of workspace {}\n", text(answer, "workspace"));
    for (field, title) in sections {
        let keys = array(answer, field);
        out.push_str(&format!("\n{} ({})\n", style.bold(&title), keys.len()));
        if !keys.is_empty() {
            out.push_str(&table::keys_table(keys, now, style));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "key": {"key_id": "key_1", "workspace": "acme", "name": "billing", "status": "revoked", "hint": "kl_live_…ab12",
                    "scopes": [], "resources": [], "metadata": {}, "created_at": "2025-06-15T10:00:00Z", "created_by": "key_admin"},
            "lifecycle": [
                {"seq": 3, "at": "2025-06-15T10:00:00Z", "kind": "created", "actor": "key_admin", "request_id": "req_a"},
                {"seq": 9, "at": "2025-06-15T11:30:00Z", "kind": "revoked", "actor": "key_admin", "request_id": "req_b", "reason": "leaked"},
            ],
            "window": {"since": "2025-06-15T11:00:00Z", "until": "2025-06-15T12:00:00Z"},
            "uses": {"allowed": 5, "denied": 4, "first": "2025-06-15T11:01:00Z", "last": "2025-06-15T11:40:00Z"},
            "sources": [
                {"value": "203.0.113.66", "count": 6, "allowed": 3, "denied": 3, "first_seen": "2025-06-15T11:05:00Z", "last_seen": "2025-06-15T11:40:00Z", "new_since": true},
                {"value": "198.51.100.7", "count": 3, "allowed": 2, "denied": 1, "first_seen": "2025-06-15T11:01:00Z", "last_seen": "2025-06-15T11:35:00Z", "new_since": false},
            ],
            "user_agents": [
                {"value": "python-requests/2.31", "count": 6, "allowed": 3, "denied": 3, "first_seen": "2025-06-15T11:05:00Z", "last_seen": "2025-06-15T11:40:00Z", "new_since": true},
            ],
            "paths": [{"value": "/v1/customers/export", "count": 6}],
            "after_revocation": {"since": "2025-06-15T11:30:00Z", "count": 3, "first": "2025-06-15T11:35:00Z", "last": "2025-06-15T11:40:00Z",
                "sources": [{"value": "203.0.113.66", "count": 2, "allowed": 0, "denied": 2, "first_seen": "2025-06-15T11:36:00Z", "last_seen": "2025-06-15T11:40:00Z", "new_since": true}]},
        })
    }

    #[test]
    fn reports_mark_new_sources_and_agents() {
        let now = table::parse_time("2025-06-15T12:00:00Z").unwrap();
        let out = report_view(&report(), now, Style::PLAIN);
        assert!(out.starts_with("Leak report of key key_1 (billing, workspace acme): revoked\n"), "{out}");
        assert!(out.contains("Uses in the window: 5 allowed, 4 denied"), "{out}");
        assert!(out.contains("Sources (2, 1 new since the window's start)"), "{out}");
        let line = |needle: &str| {
            out.lines().find(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle}: {out}"))
        };
        assert!(line("203.0.113.66").contains(" NEW "), "{out}");
        assert!(!line("198.51.100.7").contains("NEW"), "{out}");
        assert!(line("python-requests/2.31").contains(" NEW "), "{out}");
        assert!(out.contains("2025-06-15 11:30:00Z  revoked  key_admin  req_b       leaked"), "{out}");
        assert!(out.contains("After revocation or expiry: 3 attempts since 2025-06-15 11:30:00Z"), "{out}");
        assert!(out.contains("/v1/customers/export  6"), "{out}");
        assert!(!out.contains('\x1b'));

        // The whole-life report of a lookup has no window start, so nothing is marked NEW.
        let mut whole = report();
        whole["window"]["since"] = Value::Null;
        whole["after_revocation"] =
            json!({"since": null, "count": 0, "first": null, "last": null, "sources": []});
        let out = lookup_view(
            &json!({"key_id": "key_1", "workspace": "acme", "status": "active", "report": whole}),
            now,
            Style::PLAIN,
        );
        assert!(out.starts_with("This secret is key key_1 of workspace acme (active)."), "{out}");
        assert!(!out.contains("NEW"), "{out}");
        assert!(out.contains("After revocation: not revoked or expired"), "{out}");
    }

    #[test]
    fn events_sources_and_active_keys_render() {
        let events = json!({"events": [
            {"seq": 4, "at": "2025-06-15T11:01:00.123Z", "kind": "used", "actor": "key_1", "request_id": "req_c",
             "context": {"ip": "198.51.100.7", "user_agent": "billing/1.0", "path": "/v1/invoices"}},
            {"seq": 5, "at": "2025-06-15T11:02:00Z", "kind": "denied", "actor": "key_1", "request_id": "req_d",
             "reason": "forbidden", "context": {"ip": "203.0.113.66"}},
        ], "next_cursor": "6"});
        let out = events_view(&events, Style::PLAIN);
        assert!(out.starts_with("SEQ"), "{out}");
        assert!(
            out.contains(
                "4    2025-06-15 11:01:00Z  used    key_1  198.51.100.7  billing/1.0  /v1/invoices  -"
            ),
            "{out}"
        );
        assert!(out.contains("forbidden"), "{out}");
        assert!(out.ends_with("more events: --cursor 6 (or --all)\n"), "{out}");
        assert_eq!(events_view(&json!({"events": [], "next_cursor": null}), Style::PLAIN), "no events\n");

        let sources = json!({"source": "203.0.113.0/24", "keys": [{"key_id": "key_1", "workspace": "acme", "count": 6, "allowed": 3, "denied": 3,
            "first_seen": "2025-06-15T11:05:00Z", "last_seen": "2025-06-15T11:40:00Z"}]});
        let out = sources_view(&sources, Style::PLAIN);
        assert!(out.starts_with("Keys used from 203.0.113.0/24: 1"), "{out}");
        assert!(out.contains("key_1   acme       6     3        3"), "{out}");
        assert_eq!(
            sources_view(&json!({"source": "10.0.0.1", "keys": []}), Style::PLAIN),
            "no key was used from 10.0.0.1\n"
        );

        let active = json!({"workspace": "acme", "active_at": "2025-06-15T11:00:00Z", "keys": [{"key_id": "key_1", "name": "billing",
            "hint": "kl_live_…ab12", "environment": "live", "scopes": ["read"], "created_at": "2025-06-15T10:00:00Z", "expires_at": null, "revoked_at": null}]});
        let out = active_view(&active, Style::PLAIN);
        assert!(out.starts_with("Keys of workspace acme valid at 2025-06-15 11:00:00Z: 1\n"), "{out}");
        assert!(out.contains("key_1   billing"), "{out}");
    }
}
