//! `keyledger audit …`: the audit endpoints of a running server (docs/api.md, "Audit"):
//! a key's events, the leak report, request ids, sources, the keys valid at an instant,
//! hygiene, the lookup of a leaked secret, and offline proofs of one event (`prove`,
//! built in [`crate::proof`]).
//!
//! Same options and exit codes as `keyledger keys`: `--url`/`KEYLEDGER_URL`,
//! `--admin-key`/`KEYLEDGER_ADMIN_KEY`, `--json` for the server's JSON; failures print
//! `keyledger: <code>: <message>` and exit 2 (usage), 3 (auth), 4 (not found), 5 (server)
//! or 6 (transport).
//!
//! Times (`--since`, `--from`, `--at`…) are RFC 3339 instants or a duration ago (`24h`,
//! `7d`). `lookup` reads the candidate secret from standard input only, so that it never
//! lands in shell history or a process listing.

use crate::client::{Client, ClientError, EventsQuery};
use crate::connection::{Connection, emit, emit_json, finish};
use crate::table::{self, Cell, Style};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

/// `keyledger audit …`
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// A key's events, oldest first (one page, or every page with --all).
    Events(EventsArgs),
    /// The leak report of a key: its lifecycle, and its uses since an instant (sources and
    /// user agents never seen before it are marked NEW), attempts after revocation.
    Compromise {
        key_id: String,
        /// Start of the window, e.g. when the secret may have leaked.
        #[arg(long, value_parser = instant)]
        since: String,
        /// End of the window (default: now).
        #[arg(long, value_parser = instant)]
        until: Option<String>,
    },
    /// The events and key behind a request id (keyledger's own or the gateway's).
    Request { request_id: String },
    /// The keys used from an address or a network (CIDR).
    Source {
        #[arg(value_parser = source, value_name = "IP_OR_CIDR")]
        source: String,
        #[arg(long, value_parser = instant)]
        from: Option<String>,
        #[arg(long, value_parser = instant)]
        to: Option<String>,
    },
    /// The keys of a workspace that were valid at an instant, reconstructed from the log.
    ActiveAt {
        workspace: String,
        /// The instant (default: now).
        #[arg(long, value_parser = instant)]
        at: Option<String>,
    },
    /// Live keys never used, unused for a while, without expiry, old, or expiring soon.
    Hygiene {
        workspace: String,
        /// "Unused" means not used for this long (default 90d).
        #[arg(long, value_parser = positive_duration)]
        unused_for: Option<String>,
        /// "Old" means created longer ago than this (default 90d).
        #[arg(long, value_parser = positive_duration)]
        older_than: Option<String>,
    },
    /// Write an offline proof of one event (a C2SP tlog-proof bundle, docs/proof-bundles.md):
    /// its bytes, its inclusion proof and the signed checkpoint, cosignatures included.
    /// Check it anywhere with `keyledger proof verify FILE --public-key KEY`.
    Prove {
        /// An event seq, or a request id whose trace holds exactly one event (a request
        /// with several events is refused with their seqs: prove them one by one).
        #[arg(value_name = "EVENT_SEQ|REQUEST_ID")]
        target: String,
        /// Where to write the bundle (written to FILE.partial, renamed when complete).
        #[arg(long, short)]
        out: std::path::PathBuf,
        /// How long to wait, in seconds (at most 3600), for a signed checkpoint that covers
        /// the event.
        #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
        wait: u64,
    },
    /// Which key a leaked secret is (or was), with its whole-life report. The candidate is
    /// read from standard input, never from the command line:
    /// `keyledger audit lookup < leaked.txt`.
    Lookup {
        /// Ask for the secret on the terminal (it is echoed).
        #[arg(long)]
        prompt: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// created, rotated, revoked, expired, updated…
    Lifecycle,
    /// used and denied.
    Usage,
    All,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Lifecycle => "lifecycle",
            Kind::Usage => "usage",
            Kind::All => "all",
        }
    }
}

#[derive(Args)]
struct EventsArgs {
    key_id: String,
    #[arg(long, value_enum, default_value = "all")]
    kind: Kind,
    /// Only events at or after this instant.
    #[arg(long, value_parser = instant)]
    from: Option<String>,
    /// Only events before this instant.
    #[arg(long, value_parser = instant)]
    to: Option<String>,
    /// Events per page (1–1000; the server's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
    /// Continue from the `next_cursor` of an earlier page.
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow `next_cursor` to the last event.
    #[arg(long)]
    all: bool,
}

/// An RFC 3339 instant as given, or a duration ago (`24h`, `7d`) as an RFC 3339 instant.
fn instant(text: &str) -> Result<String, String> {
    if keyledger_core::Timestamp::parse_rfc3339(text).is_some() {
        return Ok(text.to_owned());
    }
    if text == "now" {
        return Ok(keyledger_core::Timestamp::now().to_rfc3339());
    }
    match keyledger_core::parse_duration(text) {
        Some(ago) => Ok(keyledger_core::Timestamp::now().plus_micros(-ago).to_rfc3339()),
        None => Err("expected an RFC 3339 time such as `2026-01-31T00:00:00Z`, or a duration ago such as `24h` or `7d`".to_owned()),
    }
}

fn positive_duration(text: &str) -> Result<String, String> {
    match keyledger_core::parse_duration(text) {
        Some(micros) if micros > 0 => Ok(text.to_owned()),
        _ => Err("expected a positive duration such as `30m`, `12h`, `90d` or `2w`".to_owned()),
    }
}

/// An IP address or a CIDR network.
fn source(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.parse::<std::net::IpAddr>().is_ok() || text.parse::<ipnet::IpNet>().is_ok() {
        Ok(text.to_owned())
    } else {
        Err("expected an IP address (`203.0.113.9`, `2001:db8::1`) or a network (`203.0.113.0/24`)"
            .to_owned())
    }
}

pub fn run(args: AuditArgs) -> ExitCode {
    finish(audit(args))
}

fn audit(args: AuditArgs) -> Result<(), ClientError> {
    let json_mode = args.connection.json;
    // Read (and check) the secret before anything else, so a refusal sends nothing.
    let secret = match &args.command {
        AuditCommand::Lookup { prompt } => Some(read_secret(*prompt)?),
        _ => None,
    };
    let client = args.connection.client()?;
    let style = Style::for_stdout();
    let now = Utc::now();
    let show = |value: &Value, human: &dyn Fn(&Value) -> String| {
        if json_mode { emit_json(value) } else { emit(&human(value)) }
    };
    match args.command {
        AuditCommand::Events(events) => {
            let answer = fetch_events(&client, &events)?;
            show(&answer, &|answer| events_view(answer, style));
        }
        AuditCommand::Compromise { key_id, since, until } => {
            let report = client.compromise(&key_id, Some(&since), until.as_deref())?;
            show(&report, &|report| report_view(report, now, style));
        }
        AuditCommand::Request { request_id } => {
            let answer = client.audit_request(&request_id)?;
            show(&answer, &|answer| request_view(answer, now, style));
        }
        AuditCommand::Source { source, from, to } => {
            let answer = client.audit_sources(&source, from.as_deref(), to.as_deref())?;
            show(&answer, &|answer| sources_view(answer, style));
        }
        AuditCommand::ActiveAt { workspace, at } => {
            let answer = client.active_keys(&workspace, at.as_deref())?;
            show(&answer, &|answer| active_view(answer, style));
        }
        AuditCommand::Hygiene { workspace, unused_for, older_than } => {
            let answer = client.hygiene(&workspace, unused_for.as_deref(), older_than.as_deref())?;
            let labels = (unused_for.as_deref().unwrap_or("90d"), older_than.as_deref().unwrap_or("90d"));
            show(&answer, &|answer| hygiene_view(answer, labels, now, style));
        }
        AuditCommand::Prove { target, out, wait } => {
            let written = crate::proof::prove(&client, &target, &out, std::time::Duration::from_secs(wait))?;
            show(&written, &prove_view);
        }
        AuditCommand::Lookup { .. } => {
            let secret = secret.unwrap_or_default();
            let answer = client.lookup(&secret)?;
            drop(secret);
            show(&answer, &|answer| lookup_view(answer, now, style));
        }
    }
    Ok(())
}

/// One page of events, or (with `--all`) every page joined, in the server's shape.
fn fetch_events(client: &Client, args: &EventsArgs) -> Result<Value, ClientError> {
    let mut cursor = args.cursor.clone();
    let mut events: Vec<Value> = Vec::new();
    loop {
        let query = EventsQuery {
            kind: Some(args.kind.as_str()),
            from: args.from.as_deref(),
            to: args.to.as_deref(),
            limit: args.limit,
            cursor: cursor.as_deref(),
        };
        let mut page = client.key_events(&args.key_id, &query)?;
        if !args.all {
            return Ok(page);
        }
        if let Some(items) = page.get_mut("events").and_then(Value::as_array_mut) {
            events.append(items);
        }
        let next = match &page["next_cursor"] {
            Value::String(next) => Some(next.clone()),
            Value::Number(next) => Some(next.to_string()),
            _ => None,
        };
        match next {
            None => break,
            // A server that does not move its cursor forward would loop forever.
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(ClientError::Transport(format!(
                    "the server returned the same cursor {next} twice; stopping"
                )));
            }
            Some(next) => cursor = Some(next),
        }
    }
    Ok(json!({"events": events, "next_cursor": null}))
}

/// Reads the candidate secret: from a pipe or a file on stdin, or (with `--prompt`) typed
/// on the terminal. Never from the command line.
fn read_secret(prompt: bool) -> Result<String, ClientError> {
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        if !prompt {
            return Err(ClientError::Usage(
                "the secret is read from standard input, and stdin is a terminal: pipe it in (`keyledger audit lookup < leaked.txt`) or pass --prompt to type it"
                    .into(),
            ));
        }
        eprint!("Candidate secret (it is sent to the server only to be hashed, never stored): ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| ClientError::Usage(format!("cannot read the secret: {e}")))?;
        line
    } else {
        let mut bytes = Vec::new();
        // A key is ~60 characters; anything much longer is not one.
        stdin
            .lock()
            .take(64 * 1024)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Usage(format!("cannot read the secret from stdin: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|_| ClientError::Usage("the secret on stdin is not UTF-8 text".into()))?
    };
    candidate(&text)
}

/// The one secret in `text` (surrounding whitespace and a trailing newline ignored).
fn candidate(text: &str) -> Result<String, ClientError> {
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ClientError::Usage("no secret on standard input".into()));
    }
    if secret.chars().any(char::is_whitespace) {
        return Err(ClientError::Usage(
            "standard input must hold exactly one secret (found whitespace inside it)".into(),
        ));
    }
    Ok(secret.to_owned())
}

// ---- human views ----

fn prove_view(written: &Value) -> String {
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

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

fn number(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn array<'a>(value: &'a Value, field: &str) -> &'a [Value] {
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

fn events_view(answer: &Value, style: Style) -> String {
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
fn report_view(report: &Value, now: DateTime<Utc>, style: Style) -> String {
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

fn lookup_view(answer: &Value, now: DateTime<Utc>, style: Style) -> String {
    format!(
        "{} is key {} of workspace {} ({}).\n\n{}",
        style.warn("This secret"),
        text(answer, "key_id"),
        text(answer, "workspace"),
        style.status(text(answer, "status")),
        report_view(&answer["report"], now, style)
    )
}

fn request_view(answer: &Value, now: DateTime<Utc>, style: Style) -> String {
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

fn sources_view(answer: &Value, style: Style) -> String {
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

fn active_view(answer: &Value, style: Style) -> String {
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

fn hygiene_view(
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
    use crate::client::{audit_url, exit};
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        Audit(AuditArgs),
    }

    fn parse(args: &[&str]) -> Result<AuditArgs, clap::Error> {
        let mut argv = vec!["keyledger", "audit"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv).map(|h| match h.command {
            Top::Audit(audit) => audit,
        })
    }

    fn exit_code(args: &[&str]) -> Option<i32> {
        parse(args).err().map(|e| e.exit_code())
    }

    #[test]
    fn subcommands_parse_with_global_options_anywhere() {
        let args = parse(&["events", "key_x", "--kind", "usage", "--limit", "5", "--all", "--json"]).unwrap();
        assert!(args.connection.json);
        let AuditCommand::Events(events) = args.command else { panic!("events") };
        assert_eq!((events.kind, events.limit, events.all), (Kind::Usage, Some(5), true));
        let args = parse(&[
            "--json",
            "--url",
            "http://h:1",
            "compromise",
            "key_x",
            "--since",
            "2025-01-01T00:00:00Z",
        ])
        .unwrap();
        assert_eq!(args.connection.url, "http://h:1");
        let AuditCommand::Compromise { since, until, .. } = args.command else { panic!("compromise") };
        assert_eq!((since.as_str(), until), ("2025-01-01T00:00:00Z", None));
        let AuditCommand::Source { source, .. } = parse(&["source", "203.0.113.0/24"]).unwrap().command
        else {
            panic!("source")
        };
        assert_eq!(source, "203.0.113.0/24");
        assert!(matches!(
            parse(&["lookup", "--prompt"]).unwrap().command,
            AuditCommand::Lookup { prompt: true }
        ));
        assert!(matches!(
            parse(&["hygiene", "acme", "--unused-for", "30d"]).unwrap().command,
            AuditCommand::Hygiene { unused_for: Some(_), older_than: None, .. }
        ));
    }

    #[test]
    fn bad_arguments_are_refused_before_sending() {
        assert_eq!(exit_code(&["compromise", "key_x"]), Some(2), "--since is required");
        assert_eq!(exit_code(&["compromise", "key_x", "--since", "yesterday"]), Some(2));
        assert_eq!(exit_code(&["events", "key_x", "--kind", "weird"]), Some(2));
        assert_eq!(exit_code(&["events", "key_x", "--limit", "0"]), Some(2));
        assert_eq!(exit_code(&["events", "key_x", "--limit", "1001"]), Some(2));
        assert_eq!(exit_code(&["events", "key_x", "--all", "--cursor", "5"]), Some(2));
        assert_eq!(exit_code(&["source", "not-an-ip"]), Some(2));
        assert_eq!(exit_code(&["source", "10.0.0.0/33"]), Some(2));
        assert_eq!(exit_code(&["hygiene", "acme", "--older-than", "0s"]), Some(2));
        assert_eq!(exit_code(&["active-at", "acme", "--at", "soon"]), Some(2));
        // The secret is never an argument.
        assert_eq!(exit_code(&["lookup", "kl_live_abc"]), Some(2));
        assert_eq!(exit_code(&["source", "2001:db8::/32"]), None);
        assert_eq!(exit_code(&["events", "key_x", "--limit", "1000"]), None);
    }

    #[test]
    fn instants_are_rfc3339_or_a_duration_ago() {
        assert_eq!(instant("2025-06-15T12:00:00+02:00").unwrap(), "2025-06-15T12:00:00+02:00");
        let before = keyledger_core::Timestamp::now();
        let day_ago = keyledger_core::Timestamp::parse_rfc3339(&instant("24h").unwrap()).unwrap();
        let expected = before.plus_micros(-86_400_000_000);
        assert!((day_ago.micros() - expected.micros()).abs() < 5_000_000, "{day_ago:?}");
        assert!(keyledger_core::Timestamp::parse_rfc3339(&instant("now").unwrap()).is_some());
        assert!(instant("tomorrow").is_err());
    }

    #[test]
    fn urls_encode_every_value() {
        let query = EventsQuery {
            kind: Some("usage"),
            from: Some("2025-06-15T12:00:00+02:00"),
            limit: Some(50),
            cursor: Some("17"),
            ..EventsQuery::default()
        };
        assert_eq!(
            audit_url::key_events("key_x", &query),
            "/v1/keys/key_x/events?kind=usage&from=2025-06-15T12%3A00%3A00%2B02%3A00&limit=50&cursor=17"
        );
        assert_eq!(audit_url::key_events("key_x", &EventsQuery::default()), "/v1/keys/key_x/events");
        assert_eq!(
            audit_url::compromise("key_x", Some("2025-01-01T00:00:00Z"), None),
            "/v1/audit/keys/key_x/compromise?since=2025-01-01T00%3A00%3A00Z"
        );
        assert_eq!(audit_url::request("gw 1/2"), "/v1/audit/requests/gw%201%2F2");
        assert_eq!(
            audit_url::sources("203.0.113.0/24", None, None),
            "/v1/audit/sources?cidr=203.0.113.0%2F24"
        );
        assert_eq!(
            audit_url::sources("2001:db8::1", Some("2025-01-01T00:00:00Z"), Some("2025-02-01T00:00:00Z")),
            "/v1/audit/sources?cidr=2001%3Adb8%3A%3A1&from=2025-01-01T00%3A00%3A00Z&to=2025-02-01T00%3A00%3A00Z"
        );
        assert_eq!(audit_url::active_keys("acme", None), "/v1/audit/keys?workspace=acme");
        assert_eq!(
            audit_url::hygiene("acme", Some("30d"), Some("1w")),
            "/v1/audit/hygiene?workspace=acme&unused_for=30d&older_than=1w"
        );
        assert_eq!(audit_url::LOOKUP, "/v1/audit/lookup");
    }

    #[test]
    fn the_candidate_is_one_trimmed_secret() {
        assert_eq!(candidate("kl_live_abc\n").unwrap(), "kl_live_abc");
        assert_eq!(candidate("  kl_live_abc \r\n").unwrap(), "kl_live_abc");
        assert_eq!(candidate("\n").unwrap_err().exit_code(), exit::USAGE);
        assert_eq!(candidate("kl_live_a\nkl_live_b\n").unwrap_err().exit_code(), exit::USAGE);
    }

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
