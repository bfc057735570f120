//! The HTML form of a compliance report (docs/compliance.md, "The signed report"): one
//! self-contained page — inline CSS and SVG, no script, no external asset — that prints
//! well, and that embeds the signed report JSON
//! ([`keyledger_verify::report::html_embed`]) so the page itself can be verified.
//!
//! [`render`] is a pure function of the signed report: `keyledger report verify` renders the
//! verified JSON again and requires the page to be byte-for-byte that rendering, so what a
//! person reads is exactly what was signed. Every text from the log is HTML-escaped.

use keyledger_verify::report::{EXCEPTION_KINDS, HTML_EMBED_CLOSE, HTML_EMBED_OPEN, html_embed};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Keys drawn in the per-key chart (the table lists them all).
const CHART_KEYS: usize = 20;

const CSS: &str = "\
:root{--ink:#1b1f24;--muted:#5b6470;--line:#d6dae0;--used:#2f6fb5;--denied:#c2412d;--warn:#fff4e5}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid var(--ink);padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.muted{color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:12.5px}
.scroll{overflow-x:auto}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:140px}
.card b{display:block;font-size:22px}
.exception{background:var(--warn)}
.callout{border-left:4px solid var(--denied);background:#fdf0ee;padding:8px 12px;margin:8px 0}
svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
pre{white-space:pre-wrap;word-break:break-all;font-size:11px;background:#f6f8fa;padding:8px}
@media print{body{max-width:none;padding:0;font-size:11px}.scroll{overflow:visible}table{font-size:9.5px}h2{break-after:avoid}tr,.card,svg{break-inside:avoid}
a{color:inherit;text-decoration:none}@page{size:A4;margin:14mm}}
";

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON member as cell text: strings as they are, `null` as an empty cell, lists joined.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|i| text(Some(i))).collect::<Vec<_>>().join(", "),
        Some(Value::Object(map)) => {
            map.iter().map(|(k, v)| format!("{k}: {}", text(Some(v)))).collect::<Vec<_>>().join(", ")
        }
        Some(other) => other.to_string(),
    }
}

fn num(value: Option<&Value>) -> u64 {
    value.and_then(Value::as_u64).unwrap_or(0)
}

fn list(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A table of `rows` with `columns` (member, heading, numeric).
fn table(out: &mut String, rows: &[Value], columns: &[(&str, &str, bool)], class: &str) {
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for (_, heading, numeric) in columns {
        let _ = write!(out, "<th{}>{}</th>", if *numeric { " class=\"n\"" } else { "" }, esc(heading));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        let _ = write!(
            out,
            "<tr{}>",
            if class.is_empty() { String::new() } else { format!(" class=\"{class}\"") }
        );
        for (member, _, numeric) in columns {
            let cell = esc(&text(row.get(*member)));
            let _ = write!(out, "<td{}>{cell}</td>", if *numeric { " class=\"n\"" } else { "" });
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
}

/// Verifications and denials per day, stacked bars.
fn day_chart(out: &mut String, days: &[Value]) {
    let (width, height, left, bottom) = (900u64, 180u64, 40u64, 20u64);
    let max = days.iter().map(|d| num(d.get("used")) + num(d.get("denied"))).max().unwrap_or(0).max(1);
    let n = days.len().max(1) as u64;
    let slot = ((width - left) * 100 / n).max(1); // hundredths of a pixel
    let plot = height - bottom;
    let _ = write!(
        out,
        "<svg class=\"chart\" id=\"chart-days\" role=\"img\" aria-label=\"Verifications and denials per day\" \
         viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
         <line x1=\"{left}\" y1=\"{plot}\" x2=\"{width}\" y2=\"{plot}\" stroke=\"#888\"/>\
         <text x=\"0\" y=\"12\">{max}</text><text x=\"0\" y=\"{plot}\">0</text>"
    );
    for (i, day) in days.iter().enumerate() {
        let (used, denied) = (num(day.get("used")), num(day.get("denied")));
        let x = left * 100 + i as u64 * slot;
        let bar = (slot * 8 / 10).max(100);
        let hu = used * plot / max;
        let hd = denied * plot / max;
        let label = esc(&text(day.get("day")));
        let _ = write!(
            out,
            "<g><title>{label}: {used} verified, {denied} denied</title>\
             <rect x=\"{}.{:02}\" y=\"{}\" width=\"{}.{:02}\" height=\"{hu}\" fill=\"#2f6fb5\"/>\
             <rect x=\"{}.{:02}\" y=\"{}\" width=\"{}.{:02}\" height=\"{hd}\" fill=\"#c2412d\"/></g>",
            x / 100,
            x % 100,
            plot - hu,
            bar / 100,
            bar % 100,
            x / 100,
            x % 100,
            plot - hu - hd,
            bar / 100,
            bar % 100,
        );
        if i == 0 || i + 1 == days.len() {
            let _ =
                write!(out, "<text x=\"{}\" y=\"{}\">{label}</text>", (x / 100).min(width - 70), height - 4);
        }
    }
    out.push_str("</svg>\n<p class=\"legend muted\"><span style=\"background:#2f6fb5\"></span>verified<span style=\"background:#c2412d\"></span>denied</p>\n");
}

/// Verifications and denials of the busiest keys, horizontal bars.
fn key_chart(out: &mut String, keys: &[Value]) {
    let keys = &keys[..keys.len().min(CHART_KEYS)];
    if keys.is_empty() {
        return;
    }
    let (width, row, label) = (900u64, 18u64, 260u64);
    let height = row * keys.len() as u64 + 4;
    let max = keys.iter().map(|k| num(k.get("used")) + num(k.get("denied"))).max().unwrap_or(0).max(1);
    let _ = write!(
        out,
        "<svg class=\"chart\" id=\"chart-keys\" role=\"img\" aria-label=\"Verifications and denials per key\" \
         viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">"
    );
    for (i, key) in keys.iter().enumerate() {
        let (used, denied) = (num(key.get("used")), num(key.get("denied")));
        let y = i as u64 * row + 2;
        let span = width - label - 60;
        let wu = used * span / max;
        let wd = denied * span / max;
        let name = text(key.get("name"));
        let short: String = name.chars().take(34).collect();
        let _ = write!(
            out,
            "<g><title>{}: {used} verified, {denied} denied</title><text x=\"0\" y=\"{}\">{}</text>\
             <rect x=\"{label}\" y=\"{y}\" width=\"{wu}\" height=\"{}\" fill=\"#2f6fb5\"/>\
             <rect x=\"{}\" y=\"{y}\" width=\"{wd}\" height=\"{}\" fill=\"#c2412d\"/>\
             <text x=\"{}\" y=\"{}\">{}</text></g>",
            esc(&name),
            y + 12,
            esc(&short),
            row - 4,
            label + wu,
            row - 4,
            label + wu + wd + 4,
            y + 12,
            used + denied,
        );
    }
    out.push_str("</svg>\n");
}

/// The HTML page of a signed report.
pub fn render(report: &Map<String, Value>) -> String {
    let empty = Value::Null;
    let f = report.get("figures").unwrap_or(&empty);
    let p = report.get("parameters").unwrap_or(&empty);
    let cp = report.get("checkpoint").unwrap_or(&empty);
    let scope = match p.get("workspaces") {
        Some(Value::Array(list)) => format!("workspace {}", text(Some(&Value::Array(list.clone())))),
        _ => "the whole ledger".into(),
    };
    let from = text(p.get("from"));
    let to = text(p.get("to"));
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Compliance report: {} — {} to {}</title><style>{CSS}</style></head><body>\n",
        esc(&scope),
        esc(&from),
        esc(&to)
    );
    let _ = writeln!(
        out,
        "<header><h1>Key compliance report</h1><p>{} · period <b>{}</b> to <b>{}</b> (end exclusive) · \
         measured at {} · unused threshold {} days · log <code>{}</code></p></header>",
        esc(&scope),
        esc(&from),
        esc(&to),
        esc(&text(p.get("as_of"))),
        num(p.get("unused_days")),
        esc(&text(report.get("origin")))
    );

    let inventory = list(f.get("inventory"));
    let usage = f.get("usage").unwrap_or(&empty);
    let counts = f.get("exception_counts").unwrap_or(&empty);
    let exceptions = list(f.get("exceptions"));
    let live = inventory
        .iter()
        .filter(|k| matches!(k.get("status").and_then(Value::as_str), Some("active" | "disabled")))
        .count();
    let _ = writeln!(
        out,
        "<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">\
         <div class=\"card\"><b>{}</b>keys in the inventory</div><div class=\"card\"><b>{live}</b>live at the end</div>\
         <div class=\"card\"><b>{}</b>lifecycle events</div><div class=\"card\"><b>{}</b>exceptions</div>\
         <div class=\"card\"><b>{}</b>verifications</div><div class=\"card\"><b>{}</b>denials</div>\
         <div class=\"card\"><b>{}</b>break-glass recoveries</div></div></section>",
        inventory.len(),
        f.get("lifecycle")
            .and_then(|l| l.get("counts"))
            .and_then(Value::as_object)
            .map_or(0, |c| c.values().filter_map(Value::as_u64).sum::<u64>()),
        exceptions.len(),
        num(usage.get("used")),
        num(usage.get("denied")),
        num(f.get("break_glass").and_then(|b| b.get("count"))),
    );

    out.push_str("<section id=\"inventory\"><h2>1. Inventory at the end of the period</h2>\n");
    table(
        &mut out,
        inventory,
        &[
            ("name", "name", false),
            ("key_id", "key", false),
            ("workspace", "workspace", false),
            ("owner", "owner", false),
            ("environment", "env", false),
            ("scopes", "scopes", false),
            ("resources", "resources", false),
            ("status", "status", false),
            ("created_at", "created", false),
            ("created_by", "created by", false),
            ("age_days", "age (days)", true),
            ("rotated_from", "rotated from", false),
            ("expires_at", "expires", false),
            ("last_used_at", "last used", false),
            ("last_used_ip", "from", false),
            ("uses_in_period", "uses", true),
            ("denials_in_period", "denials", true),
        ],
        "",
    );
    out.push_str("</section>\n");

    let lifecycle = f.get("lifecycle").unwrap_or(&empty);
    out.push_str("<section id=\"lifecycle\"><h2>2. Lifecycle in the period</h2>\n<p>");
    if let Some(counts) = lifecycle.get("counts").and_then(Value::as_object) {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{} {}", num(Some(v)), esc(k))).collect();
        out.push_str(&if parts.is_empty() { "No lifecycle event.".to_owned() } else { parts.join(" · ") });
    }
    out.push_str("</p>\n");
    let break_glass = f.get("break_glass").unwrap_or(&empty);
    if num(break_glass.get("count")) > 0 {
        let _ = writeln!(
            out,
            "<div class=\"callout\" id=\"break-glass\"><b>Break-glass recovery used {} time(s) in the period</b> \
             (<code>keyledger admin recover</code>, run by whoever held the data directory).</div>",
            num(break_glass.get("count"))
        );
        table(&mut out, list(break_glass.get("events")), LIFECYCLE_COLUMNS, "exception");
    }
    out.push_str("<h3>Admin-key activity</h3>\n");
    table(
        &mut out,
        list(f.get("admin_activity")),
        &[("actor", "admin key", false), ("events", "events", true), ("by_kind", "by kind", false)],
        "",
    );
    out.push_str("<h3>Events</h3>\n");
    table(&mut out, list(lifecycle.get("events")), LIFECYCLE_COLUMNS, "");
    if num(lifecycle.get("omitted")) > 0 {
        let _ = writeln!(
            out,
            "<p class=\"muted\">{} more not listed (see an export).</p>",
            num(lifecycle.get("omitted"))
        );
    }
    out.push_str("</section>\n");

    out.push_str("<section id=\"exceptions\"><h2>3. Exceptions</h2>\n<p>");
    let parts: Vec<String> =
        EXCEPTION_KINDS.iter().map(|k| format!("{} {}", num(counts.get(*k)), k.replace('_', " "))).collect();
    out.push_str(&parts.join(" · "));
    out.push_str("</p>\n");
    table(
        &mut out,
        exceptions,
        &[
            ("kind", "exception", false),
            ("name", "name", false),
            ("key_id", "key", false),
            ("workspace", "workspace", false),
            ("detail", "detail", false),
        ],
        "exception",
    );
    out.push_str("</section>\n");

    out.push_str("<section id=\"usage\"><h2>4. Usage</h2>\n<h3>Per day</h3>\n");
    let days = list(usage.get("by_day"));
    day_chart(&mut out, days);
    let by_key = list(usage.get("by_key"));
    out.push_str("<h3>Per key</h3>\n");
    key_chart(&mut out, by_key);
    table(
        &mut out,
        by_key,
        &[
            ("name", "name", false),
            ("key_id", "key", false),
            ("used", "verified", true),
            ("denied", "denied", true),
            ("denied_by_reason", "denials by reason", false),
        ],
        "",
    );
    out.push_str("<details><summary>Per-day table</summary>\n");
    table(
        &mut out,
        days,
        &[("day", "day (UTC)", false), ("used", "verified", true), ("denied", "denied", true)],
        "",
    );
    out.push_str("</details></section>\n");

    let _ = writeln!(
        out,
        "<section id=\"anchoring\"><h2>5. Anchoring</h2><p>Computed from the first <b>{}</b> events of the log \
         (<b>{}</b> of them in scope), whose Merkle tree ({}) has the root <code>{}</code>, as this checkpoint signed \
         by the log's key says:</p><pre>{}</pre><p>The report is signed with the same key. To check it and \
         recompute every figure above from the log's events:</p>\
         <pre>keyledger report verify THIS_FILE --public-key KEY --export EXPORT.jsonl</pre></section>",
        num(cp.get("size")),
        num(f.get("events_folded")),
        esc(&text(cp.get("tree_hash"))),
        esc(&text(cp.get("root_hash"))),
        esc(&text(cp.get("note"))),
    );
    let _ = write!(out, "{HTML_EMBED_OPEN}{}{HTML_EMBED_CLOSE}\n</body></html>\n", html_embed(report));
    out
}

const LIFECYCLE_COLUMNS: &[(&str, &str, bool)] = &[
    ("at", "at", false),
    ("kind", "event", false),
    ("key_id", "key", false),
    ("workspace", "workspace", false),
    ("actor", "actor", false),
    ("request_id", "request id", false),
    ("detail", "detail", false),
    ("seq", "seq", true),
];
