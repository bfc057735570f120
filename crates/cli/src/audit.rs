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

use crate::audit_view::{
    active_view, events_view, hygiene_view, lookup_view, prove_view, report_view, request_view, sources_view,
};
use crate::client::{Client, ClientError, EventsQuery};
use crate::connection::{Connection, emit, emit_json, finish};
use crate::table::Style;
use chrono::Utc;
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
}
