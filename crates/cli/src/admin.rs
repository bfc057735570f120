//! The admin client commands of a running server (docs/api.md): `keyledger keys …`,
//! `keyledger policy …`, `keyledger webhook …`, `keyledger log checkpoint|public-key`, and shell
//! completions.
//!
//! Every command prints a human view by default and the server's JSON with `--json`.
//! Failures print `keyledger: <code>: <message>` on stderr and exit with the class's code
//! (see [`crate::client::exit`]): usage 2, auth 3, not found 4, server 5, transport 6.

use crate::client::{Checkpoint, ClientError};
use crate::connection::{Connection, emit, emit_json, finish};
use crate::table::{self, Style};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// `keyledger keys …`
#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key. Its secret is printed once and never again.
    Create(CreateArgs),
    /// List the keys of a workspace.
    List {
        workspace: String,
        /// Only keys with this status.
        #[arg(long, value_parser = ["active", "revoked", "expired", "disabled", "all"])]
        status: Option<String>,
    },
    /// Show one key.
    Show { key_id: String },
    /// Change a key's name, owner, metadata, expiry, scopes or resources.
    Update(UpdateArgs),
    /// Issue a successor with the same scopes, resources, owner, metadata and lifetime.
    /// Without --overlap the old key is revoked in the same step.
    Rotate {
        key_id: String,
        /// How long the old key stays valid (e.g. `24h`; default `0s`).
        #[arg(long, value_parser = duration)]
        overlap: Option<String>,
    },
    /// Revoke a key: immediate and irreversible.
    Revoke {
        key_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Emergency: revoke every active key of a workspace.
    RevokeAll {
        workspace: String,
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Suspend a key (reversible with `enable`).
    Disable {
        key_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a suspension.
    Enable {
        key_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Import keys known by a foreign SHA-256 hash of their secret, all or nothing
    /// (docs/import.md): a JSON file (`{"keys": [...]}`) or JSONL, at most 1,000 keys.
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        workspace: String,
    },
    /// Top up a key's usage credits (docs/credits.md).
    Credits {
        key_id: String,
        /// Credits to add to the balance.
        #[arg(long, conflicts_with = "set", required_unless_present = "set")]
        add: Option<u64>,
        /// The new balance (also gives credits to a key without any).
        #[arg(long)]
        set: Option<u64>,
    },
}

#[derive(Args)]
struct CreateArgs {
    workspace: String,
    /// A name for people (1–100 characters).
    #[arg(long)]
    name: String,
    /// A scope the key grants; repeatable.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// A resource the key may act on; repeatable (none = all).
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// Lifetime from now, e.g. `90d`, `12h`, `30m`.
    #[arg(long, value_parser = positive_duration, conflicts_with = "expires_at")]
    expires_in: Option<String>,
    /// Expiry instant (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    expires_at: Option<String>,
    #[arg(long = "env", value_parser = ["live", "test"])]
    environment: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    /// A JSON object (at most 4 KiB).
    #[arg(long, value_parser = json_object)]
    metadata: Option<Value>,
    /// An IP address or CIDR network the key may be verified from; repeatable (none = the
    /// workspace default, if any).
    #[arg(long = "allow-source", value_name = "CIDR")]
    allowed_sources: Vec<String>,
    /// Usage credits: each verification spends its cost (default 1) from this balance.
    #[arg(long)]
    credits: Option<u64>,
    /// Refill of the credits, AMOUNT/daily or AMOUNT/monthly[/DAY], e.g. `10000/monthly`.
    #[arg(long, requires = "credits", value_parser = crate::credits::refill)]
    refill: Option<Value>,
    /// A named rate limit NAME=LIMIT/DURATION, e.g. `api=100/1m`; repeatable.
    #[arg(long = "rate-limit", value_name = "NAME=LIMIT/DURATION", value_parser = crate::ratelimits::rate_limit)]
    rate_limits: Vec<Value>,
}

#[derive(Args)]
struct UpdateArgs {
    key_id: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, conflicts_with = "no_owner")]
    owner: Option<String>,
    /// Remove the owner.
    #[arg(long)]
    no_owner: bool,
    /// Replace the metadata with this JSON object.
    #[arg(long, value_parser = json_object)]
    metadata: Option<Value>,
    /// New expiry, counted from now.
    #[arg(long, value_parser = positive_duration, conflicts_with_all = ["expires_at", "no_expiry"])]
    expires_in: Option<String>,
    /// New expiry instant (RFC 3339).
    #[arg(long, value_parser = rfc3339, conflicts_with = "no_expiry")]
    expires_at: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    no_expiry: bool,
    /// Replace the scopes with these; repeatable.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Replace the resources with these; repeatable.
    #[arg(long = "resource", value_name = "RESOURCE")]
    resources: Vec<String>,
    /// Replace the source allow-list with this narrower one; repeatable.
    #[arg(long = "allow-source", value_name = "CIDR")]
    allowed_sources: Vec<String>,
    /// Replace the key's rate limits with these (NAME=LIMIT/DURATION); repeatable.
    #[arg(long = "rate-limit", value_name = "NAME=LIMIT/DURATION", value_parser = crate::ratelimits::rate_limit)]
    rate_limits: Vec<Value>,
}

/// `keyledger policy …`
#[derive(Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Show a workspace's policy.
    Get { workspace: String },
    /// Replace a workspace's policy (options not given are cleared).
    Set {
        workspace: String,
        /// At most this many active keys at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_active_keys: Option<u32>,
        /// Every new key must have an expiry.
        #[arg(long)]
        require_expiry: bool,
        /// Longest allowed lifetime of a key, e.g. `90d`.
        #[arg(long, value_parser = positive_duration)]
        max_lifetime: Option<String>,
        /// Prefix of new secrets (`[a-z][a-z0-9]{0,15}`).
        #[arg(long)]
        key_prefix: Option<String>,
        /// Source allow-list given to keys issued without one (IP or CIDR); repeatable.
        #[arg(long = "allow-source", value_name = "CIDR")]
        allowed_sources: Vec<String>,
        /// A live key may only be created or rotated with a source allow-list.
        #[arg(long)]
        require_allowed_sources: bool,
        /// What a leak report of one of its keys does (docs/leaks.md); `notify` if not given.
        #[arg(long, value_parser = ["notify", "revoke"])]
        on_leak: Option<String>,
        /// Rate limit of keys without their own, NAME=LIMIT/DURATION; repeatable.
        #[arg(long = "rate-limit", value_name = "NAME=LIMIT/DURATION", value_parser = crate::ratelimits::rate_limit)]
        rate_limits: Vec<Value>,
    },
}

/// `keyledger webhook …`
#[derive(Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Configure (or replace) a workspace's webhook; prints its new signing secret once.
    Set {
        workspace: String,
        /// Where to POST notifications (http:// or https://). `--url` names the server.
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// A notification type to send (repeatable; none = all), e.g. `key.revoked`.
        #[arg(long = "event", value_name = "TYPE")]
        events: Vec<String>,
    },
    /// Show a workspace's webhook (never its secret).
    Get { workspace: String },
    /// Disable a workspace's webhook; undelivered notifications are cancelled.
    Disable { workspace: String },
    /// List the latest delivery attempts, newest first.
    Deliveries {
        workspace: String,
        /// How many attempts (1 to 1000, default 100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
}

/// `keyledger log checkpoint`
#[derive(Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    connection: Connection,
    /// Write the signed note to this file instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// `keyledger log public-key`
#[derive(Args)]
pub struct PublicKeyArgs {
    #[command(flatten)]
    connection: Connection,
}

fn duration(text: &str) -> Result<String, String> {
    keyledger_core::parse_duration(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| "expected a duration such as `0s`, `30m`, `12h`, `90d` or `2w`".to_owned())
}

fn positive_duration(text: &str) -> Result<String, String> {
    match keyledger_core::parse_duration(text) {
        Some(micros) if micros > 0 => Ok(text.to_owned()),
        _ => Err("expected a positive duration such as `30m`, `12h`, `90d` or `2w`".to_owned()),
    }
}

fn rfc3339(text: &str) -> Result<String, String> {
    keyledger_core::Timestamp::parse_rfc3339(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| "expected an RFC 3339 time such as `2026-01-31T00:00:00Z`".to_owned())
}

fn json_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("expected a JSON object such as '{\"team\":\"payments\"}'".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

const SECRET_WARNING: &str = "Store it now: it will not be shown again.";

/// The secret of a fresh key, with the warning that it is shown only this once.
fn secret_lines(key: &Value, style: Style) -> String {
    let secret = key.get("secret").and_then(Value::as_str).unwrap_or("");
    format!("\n{}  {secret}\n{}\n", style.bold("secret:"), style.warn(SECRET_WARNING))
}

pub fn run_keys(args: KeysArgs) -> ExitCode {
    finish(keys(args))
}

fn keys(args: KeysArgs) -> Result<(), ClientError> {
    let client = args.connection.client()?;
    let json_mode = args.connection.json;
    let style = Style::for_stdout();
    let now = chrono::Utc::now();
    let show = |value: &Value, human: &dyn Fn(&Value) -> String| {
        if json_mode { emit_json(value) } else { emit(&human(value)) }
    };
    match args.command {
        KeysCommand::Create(create) => {
            let workspace = create.workspace.clone();
            let key = client.create_key(&workspace, &create_body(create))?;
            show(&key, &|key| {
                format!(
                    "Created key {} in workspace {workspace}.\n\n{}{}",
                    str_field(key, "key_id"),
                    table::key_details(key, now, style),
                    secret_lines(key, style)
                )
            });
        }
        KeysCommand::List { workspace, status } => {
            let answer = client.list_keys(&workspace, status.as_deref())?;
            show(&answer, &|answer| {
                let keys =
                    answer.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                table::keys_table(keys, now, style)
            });
        }
        KeysCommand::Show { key_id } => {
            let key = client.get_key(&key_id)?;
            show(&key, &|key| table::key_details(key, now, style));
        }
        KeysCommand::Update(update) => {
            let key_id = update.key_id.clone();
            let patch = update_body(update)?;
            let key = client.update_key(&key_id, &patch)?;
            show(&key, &|key| format!("Updated key {key_id}.\n\n{}", table::key_details(key, now, style)));
        }
        KeysCommand::Rotate { key_id, overlap } => {
            let answer = client.rotate(&key_id, overlap.as_deref())?;
            show(&answer, &|answer| {
                let (new, previous) = (&answer["key"], &answer["previous"]);
                let previous_state = match (str_field(previous, "status"), previous["expires_at"].as_str()) {
                    ("active", Some(until)) => format!("stays valid until {until}"),
                    (status, _) => format!("is now {}", style.status(status)),
                };
                format!(
                    "Rotated {key_id} to {}; the previous key {previous_state}.\n\n{}{}",
                    str_field(new, "key_id"),
                    table::key_details(new, now, style),
                    secret_lines(new, style)
                )
            });
        }
        KeysCommand::Revoke { key_id, reason } => {
            let key = client.revoke(&key_id, reason.as_deref())?;
            show(&key, &|key| format!("Revoked key {key_id}.\n\n{}", table::key_details(key, now, style)));
        }
        KeysCommand::RevokeAll { workspace, reason, yes } => {
            if !yes {
                confirm_revoke_all(&workspace)?;
            }
            let answer = client.revoke_all(&workspace, reason.as_deref())?;
            show(&answer, &|answer| {
                let ids: Vec<&str> = answer["key_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let count = answer["revoked"].as_u64().unwrap_or(ids.len() as u64);
                let mut out = format!(
                    "Revoked {count} key{} in workspace {workspace}.\n",
                    if count == 1 { "" } else { "s" }
                );
                for id in ids {
                    out.push_str(&format!("  {id}\n"));
                }
                out
            });
        }
        KeysCommand::Disable { key_id, reason } => {
            let key = client.disable(&key_id, reason.as_deref())?;
            show(&key, &|key| format!("Disabled key {key_id}.\n\n{}", table::key_details(key, now, style)));
        }
        KeysCommand::Enable { key_id, reason } => {
            let key = client.enable(&key_id, reason.as_deref())?;
            show(&key, &|key| format!("Enabled key {key_id}.\n\n{}", table::key_details(key, now, style)));
        }
        KeysCommand::Import { file, workspace } => {
            let entries = crate::import::read_entries(&file)?;
            let answer = client.import_keys(&workspace, &crate::import::body(entries))?;
            show(&answer, &|answer| crate::import::summary(&workspace, answer));
        }
        KeysCommand::Credits { key_id, add, set } => {
            let key = client.set_credits(&key_id, &crate::credits::top_up_body(add, set))?;
            show(&key, &|key| {
                format!("Credits of key {key_id} set.\n\n{}", table::key_details(key, now, style))
            });
        }
    }
    Ok(())
}

fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

fn create_body(create: CreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(create.name));
    if !create.scopes.is_empty() {
        body.insert("scopes".into(), json!(create.scopes));
    }
    if !create.resources.is_empty() {
        body.insert("resources".into(), json!(create.resources));
    }
    let optional = [
        ("expires_in", create.expires_in),
        ("expires_at", create.expires_at),
        ("environment", create.environment),
        ("owner", create.owner),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            body.insert(field.into(), json!(value));
        }
    }
    if let Some(metadata) = create.metadata {
        body.insert("metadata".into(), metadata);
    }
    if !create.allowed_sources.is_empty() {
        body.insert("allowed_sources".into(), json!(create.allowed_sources));
    }
    if !create.rate_limits.is_empty() {
        body.insert("ratelimits".into(), json!(create.rate_limits));
    }
    if let Some(credits) = crate::credits::create_member(create.credits, create.refill) {
        body.insert("credits".into(), credits);
    }
    Value::Object(body)
}

fn update_body(update: UpdateArgs) -> Result<Value, ClientError> {
    let mut patch = Map::new();
    if let Some(name) = update.name {
        patch.insert("name".into(), json!(name));
    }
    if let Some(owner) = update.owner {
        patch.insert("owner".into(), json!(owner));
    } else if update.no_owner {
        patch.insert("owner".into(), Value::Null);
    }
    if let Some(metadata) = update.metadata {
        patch.insert("metadata".into(), metadata);
    }
    if let Some(expires_in) = update.expires_in {
        patch.insert("expires_in".into(), json!(expires_in));
    } else if let Some(expires_at) = update.expires_at {
        patch.insert("expires_at".into(), json!(expires_at));
    } else if update.no_expiry {
        patch.insert("expires_at".into(), Value::Null);
    }
    if !update.scopes.is_empty() {
        patch.insert("scopes".into(), json!(update.scopes));
    }
    if !update.resources.is_empty() {
        patch.insert("resources".into(), json!(update.resources));
    }
    if !update.allowed_sources.is_empty() {
        patch.insert("allowed_sources".into(), json!(update.allowed_sources));
    }
    if !update.rate_limits.is_empty() {
        patch.insert("ratelimits".into(), json!(update.rate_limits));
    }
    if patch.is_empty() {
        return Err(ClientError::Usage(
            "nothing to update: give --name, --owner, --no-owner, --metadata, --expires-in, --expires-at, --no-expiry, --scope, --resource, --allow-source or --rate-limit"
                .into(),
        ));
    }
    Ok(Value::Object(patch))
}

/// Asks, on a terminal, to type the workspace name; refuses without a terminal.
fn confirm_revoke_all(workspace: &str) -> Result<(), ClientError> {
    let question = format!(
        "This revokes EVERY active key of workspace `{workspace}`, immediately and irreversibly.\nType the workspace name to confirm: "
    );
    crate::connection::confirm(&question, workspace, &format!("revoke every key of `{workspace}`"))
}

pub fn run_policy(args: PolicyArgs) -> ExitCode {
    finish(policy(args))
}

fn policy(args: PolicyArgs) -> Result<(), ClientError> {
    let client = args.connection.client()?;
    let policy = match args.command {
        PolicyCommand::Get { workspace } => client.get_policy(&workspace)?,
        PolicyCommand::Set {
            workspace,
            max_active_keys,
            require_expiry,
            max_lifetime,
            key_prefix,
            allowed_sources,
            require_allowed_sources,
            on_leak,
            rate_limits,
        } => {
            let mut body = Map::new();
            if !rate_limits.is_empty() {
                body.insert("ratelimits".into(), json!(rate_limits));
            }
            if let Some(on_leak) = on_leak {
                body.insert("on_leak".into(), json!(on_leak));
            }
            if let Some(max) = max_active_keys {
                body.insert("max_active_keys".into(), json!(max));
            }
            if require_expiry {
                body.insert("require_expiry".into(), json!(true));
            }
            if let Some(lifetime) = max_lifetime {
                body.insert("max_lifetime".into(), json!(lifetime));
            }
            if let Some(prefix) = key_prefix {
                body.insert("key_prefix".into(), json!(prefix));
            }
            if !allowed_sources.is_empty() {
                body.insert("allowed_sources".into(), json!(allowed_sources));
            }
            if require_allowed_sources {
                body.insert("require_allowed_sources".into(), json!(true));
            }
            client.set_policy(&workspace, &Value::Object(body))?
        }
    };
    if args.connection.json {
        emit_json(&policy);
    } else {
        emit(&table::policy_details(&policy, Style::for_stdout()));
    }
    Ok(())
}

pub fn run_webhook(args: WebhookArgs) -> ExitCode {
    finish(webhook(args))
}

fn webhook(args: WebhookArgs) -> Result<(), ClientError> {
    let client = args.connection.client()?;
    let style = Style::for_stdout();
    let (answer, human) = match args.command {
        WebhookCommand::Set { workspace, endpoint, events } => {
            let answer = client.set_webhook(&workspace, &json!({"url": endpoint, "events": events}))?;
            let human = format!(
                "Webhook of workspace {workspace} configured.\n\n{}{}",
                table::webhook_details(&answer, style),
                secret_lines(&answer, style)
            );
            (answer, human)
        }
        WebhookCommand::Get { workspace } => {
            let answer = client.get_webhook(&workspace)?;
            let human = table::webhook_details(&answer, style);
            (answer, human)
        }
        WebhookCommand::Disable { workspace } => {
            let answer = client.disable_webhook(&workspace)?;
            let human = format!(
                "Webhook of workspace {workspace} disabled.\n\n{}",
                table::webhook_details(&answer, style)
            );
            (answer, human)
        }
        WebhookCommand::Deliveries { workspace, limit } => {
            let answer = client.webhook_deliveries(&workspace, limit)?;
            let human = table::deliveries_table(&answer, chrono::Utc::now(), style);
            (answer, human)
        }
    };
    if args.connection.json {
        emit_json(&answer)
    } else {
        emit(&human)
    }
    Ok(())
}

pub fn run_checkpoint(args: CheckpointArgs) -> ExitCode {
    finish(checkpoint(args))
}

fn checkpoint(args: CheckpointArgs) -> Result<(), ClientError> {
    let client = args.connection.client()?;
    let answer = client.checkpoint()?;
    let checkpoint = Checkpoint::from_json(&answer)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, checkpoint.note.as_bytes())
                .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", path.display())))?;
            if !args.connection.json {
                eprintln!(
                    "saved the checkpoint of {} events (root {}, {}) to {}",
                    checkpoint.size,
                    checkpoint.root_hash,
                    checkpoint.timestamp,
                    path.display()
                );
            }
        }
        None if !args.connection.json => emit(&checkpoint.note),
        None => {}
    }
    if args.connection.json {
        emit_json(&answer);
    }
    Ok(())
}

pub fn run_public_key(args: PublicKeyArgs) -> ExitCode {
    finish(public_key(args))
}

fn public_key(args: PublicKeyArgs) -> Result<(), ClientError> {
    let answer = args.connection.client()?.public_key()?;
    if args.connection.json {
        emit_json(&answer);
    } else {
        emit(&format!("{}\n", str_field(&answer, "public_key")));
    }
    Ok(())
}

/// `keyledger completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = <crate::Cli as clap::CommandFactory>::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "keyledger", &mut stdout);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Subcommand)]
    #[allow(clippy::large_enum_variant)] // a test harness, parsed once per test
    enum Top {
        Keys(KeysArgs),
        Policy(PolicyArgs),
    }

    fn keys(args: &[&str]) -> KeysArgs {
        let mut argv = vec!["keyledger", "keys"];
        argv.extend_from_slice(args);
        match Harness::try_parse_from(argv).expect("parses").command {
            Top::Keys(keys) => keys,
            Top::Policy(_) => unreachable!(),
        }
    }

    #[test]
    fn create_bodies_carry_only_what_was_given() {
        let KeysCommand::Create(create) = keys(&[
            "create",
            "acme",
            "--name",
            "CI",
            "--scope",
            "read",
            "--scope",
            "write",
            "--expires-in",
            "90d",
            "--env",
            "test",
            "--metadata",
            r#"{"team":"x"}"#,
            "--admin-key",
            "k",
        ])
        .command
        else {
            panic!("create");
        };
        assert_eq!(
            create_body(create),
            json!({"name": "CI", "scopes": ["read", "write"], "expires_in": "90d", "environment": "test", "metadata": {"team": "x"}})
        );
        let KeysCommand::Create(create) = keys(&["create", "acme", "--name", "CI"]).command else {
            panic!("create")
        };
        assert_eq!(create_body(create), json!({"name": "CI"}));
        let args = ["create", "acme", "--name", "CI", "--rate-limit", "api=100/1m", "--rate-limit", "b=1/1h"];
        let KeysCommand::Create(create) = keys(&args).command else { panic!("create") };
        assert_eq!(
            create_body(create)["ratelimits"],
            json!([{"name": "api", "limit": 100, "duration": "1m", "auto_apply": true},
                   {"name": "b", "limit": 1, "duration": "1h", "auto_apply": true}])
        );
        let refused = Harness::try_parse_from([
            "keyledger",
            "keys",
            "create",
            "acme",
            "--name",
            "x",
            "--rate-limit",
            "api=0/1m",
        ]);
        assert!(refused.is_err(), "a bad --rate-limit is a usage error");
    }

    #[test]
    fn bad_values_are_refused_before_sending() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["keyledger", "keys"];
            argv.extend_from_slice(args);
            Harness::try_parse_from(argv).err().map(|e| e.exit_code())
        };
        assert_eq!(parse(&["create", "acme", "--name", "x", "--expires-in", "soon"]), Some(2));
        assert_eq!(parse(&["create", "acme", "--name", "x", "--expires-in", "0s"]), Some(2));
        assert_eq!(parse(&["create", "acme", "--name", "x", "--expires-at", "tomorrow"]), Some(2));
        assert_eq!(
            parse(&[
                "create",
                "acme",
                "--name",
                "x",
                "--expires-in",
                "1d",
                "--expires-at",
                "2030-01-01T00:00:00Z"
            ]),
            Some(2)
        );
        assert_eq!(parse(&["create", "acme", "--name", "x", "--metadata", "[1]"]), Some(2));
        assert_eq!(parse(&["create", "acme", "--name", "x", "--env", "prod"]), Some(2));
        assert_eq!(parse(&["create", "acme"]), Some(2));
        assert_eq!(parse(&["rotate", "key_x", "--overlap", "1y"]), Some(2));
        assert_eq!(parse(&["update", "key_x", "--no-expiry", "--expires-in", "1d"]), Some(2));
        assert_eq!(parse(&["list", "acme", "--status", "gone"]), Some(2));
        assert_eq!(parse(&["rotate", "key_x", "--overlap", "0s"]), None);
    }

    #[test]
    fn update_patches_and_empty_updates() {
        let KeysCommand::Update(update) =
            keys(&["update", "key_x", "--no-owner", "--no-expiry", "--scope", "a"]).command
        else {
            panic!("update")
        };
        assert_eq!(
            update_body(update).expect("patch"),
            json!({"owner": null, "expires_at": null, "scopes": ["a"]})
        );
        let KeysCommand::Update(update) = keys(&["update", "key_x"]).command else { panic!("update") };
        assert_eq!(update_body(update).expect_err("empty").exit_code(), 2);
    }

    #[test]
    fn connection_options_are_global() {
        let args = keys(&["list", "acme", "--json", "--url", "http://h:1", "--admin-key", "secret"]);
        assert!(args.connection.json);
        assert_eq!(args.connection.url, "http://h:1");
        let args = keys(&["--json", "show", "key_x"]);
        assert!(args.connection.json);
    }

    #[test]
    fn secrets_come_with_the_warning() {
        let out = secret_lines(&json!({"secret": "kl_live_abc"}), Style::PLAIN);
        assert!(out.contains("kl_live_abc"));
        assert!(out.contains("it will not be shown again"));
    }
}
