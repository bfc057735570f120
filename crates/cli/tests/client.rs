//! The admin client end to end: `keyledger init` + `keyledger serve` of the real binary on
//! a free loopback port, driven through `keyledger keys|policy|log checkpoint`.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;

use support::{BIN, Server, stderr, stdout};

/// `keyledger serve` with the flags these tests need: checkpoints every second, and private
/// webhook destinations, since the webhook test's receiver is on loopback.
const SERVE: &[&str] = &["--checkpoint-interval-secs", "1", "--webhook-allow-private"];

fn ids(keys: &Value) -> Vec<String> {
    keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key_id"].as_str().expect("key_id").to_owned())
        .collect()
}

#[test]
fn keys_lifecycle_through_the_cli() {
    let server = Server::start(SERVE);
    let created = server.json(&[
        "keys",
        "create",
        "acme",
        "--name",
        "CI deploy",
        "--scope",
        "deploy:write",
        "--scope",
        "read",
        "--resource",
        "repo-1",
        "--expires-in",
        "90d",
        "--env",
        "test",
        "--owner",
        "alice",
        "--metadata",
        r#"{"team":"payments"}"#,
    ]);
    let key_id = created["key_id"].as_str().expect("key_id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("kl_test_"), "{secret}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["workspace"], "acme");
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["metadata"]["team"], "payments");
    assert_eq!(created["resources"], serde_json::json!(["repo-1"]));
    assert!(created["expires_at"].is_string());
    let scopes: Vec<&str> =
        created["scopes"].as_array().expect("scopes").iter().filter_map(Value::as_str).collect();
    assert!(scopes.contains(&"deploy:write") && scopes.contains(&"read"), "{scopes:?}");

    // Human mode: the secret once, with the warning; a table without colours off a terminal.
    let human = server.cli(&["keys", "create", "acme", "--name", "second"]);
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    let text = stdout(&human);
    assert!(text.contains("secret:"), "{text}");
    assert!(text.contains("it will not be shown again"), "{text}");
    assert!(text.contains("kl_live_"), "{text}");

    let listed = server.json(&["keys", "list", "acme"]);
    assert_eq!(ids(&listed).len(), 2);
    assert!(ids(&listed).contains(&key_id));
    assert!(!listed.to_string().contains(&secret), "a listing never shows a secret");
    let table = server.cli(&["keys", "list", "acme"]);
    assert_eq!(table.status.code(), Some(0));
    let table = stdout(&table);
    assert!(table.starts_with("KEY ID"), "{table}");
    assert!(table.contains(&key_id) && table.contains("CI deploy") && table.contains("never"), "{table}");
    assert!(!table.contains('\x1b'), "no colours off a terminal: {table:?}");

    let shown = server.json(&["keys", "show", &key_id]);
    assert_eq!(shown["key_id"], key_id.as_str());
    assert_eq!(shown["name"], "CI deploy");
    assert!(shown.get("secret").is_none());

    let updated = server.json(&["keys", "update", &key_id, "--name", "CI deploy (prod)", "--no-expiry"]);
    assert_eq!(updated["name"], "CI deploy (prod)");
    assert!(updated["expires_at"].is_null());

    // Rotation with overlap: the old key stays active until the overlap ends.
    let rotated = server.json(&["keys", "rotate", &key_id, "--overlap", "24h"]);
    let new_id = rotated["key"]["key_id"].as_str().expect("new key").to_owned();
    assert_ne!(new_id, key_id);
    assert!(rotated["key"]["secret"].as_str().expect("new secret").starts_with("kl_test_"));
    assert_eq!(rotated["key"]["rotated_from"], key_id.as_str());
    assert_eq!(rotated["previous"]["key_id"], key_id.as_str());
    assert_eq!(rotated["previous"]["status"], "active");

    let disabled = server.json(&["keys", "disable", &new_id, "--reason", "investigating"]);
    assert_eq!(disabled["status"], "disabled");
    let enabled = server.json(&["keys", "enable", &new_id]);
    assert_eq!(enabled["status"], "active");

    let revoked = server.json(&["keys", "revoke", &key_id, "--reason", "leaked"]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked");
    // Rotating a revoked key is a conflict: exit 5 with the server's message.
    let conflict = server.cli(&["keys", "rotate", &key_id]);
    assert_eq!(conflict.status.code(), Some(5), "{}", stderr(&conflict));
    assert!(stderr(&conflict).starts_with("keyledger: conflict: "), "{}", stderr(&conflict));

    let active = server.json(&["keys", "list", "acme", "--status", "active"]);
    assert_eq!(ids(&active).len(), 2, "{active}");
    let revoked_list = server.json(&["keys", "list", "acme", "--status", "revoked"]);
    assert_eq!(ids(&revoked_list), vec![key_id.clone()]);

    // revoke-all refuses without --yes when stdin is not a terminal, and changes nothing.
    let refused = server.cli(&["keys", "revoke-all", "acme"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(ids(&server.json(&["keys", "list", "acme", "--status", "active"])).len(), 2);

    let all = server.json(&["keys", "revoke-all", "acme", "--yes", "--reason", "incident 42"]);
    assert_eq!(all["revoked"], 2);
    assert_eq!(all["key_ids"].as_array().expect("ids").len(), 2);
    assert!(ids(&server.json(&["keys", "list", "acme", "--status", "active"])).is_empty());
    let human = server.cli(&["keys", "revoke-all", "acme", "--yes"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(stdout(&human).contains("Revoked 0 keys in workspace acme."), "{}", stdout(&human));
}

#[test]
fn errors_map_to_exit_codes_without_leaking_the_admin_key() {
    let server = Server::start(SERVE);
    let unknown = server.cli(&["keys", "show", "key_01jzzzzzzzzzzzzzzzzzzzzzzz", "--json"]);
    assert_eq!(unknown.status.code(), Some(4), "{}", stderr(&unknown));
    assert!(stderr(&unknown).starts_with("keyledger: not_found: "), "{}", stderr(&unknown));
    assert!(stdout(&unknown).is_empty());

    let bogus = "kl_live_NotARealKeyNotARealKeyNotARealKeyNotARealKey1234";
    let bad_key = server.cli_with_key(bogus, &["keys", "list", "acme", "--json"]);
    assert_eq!(bad_key.status.code(), Some(3), "{}", stderr(&bad_key));
    assert!(stderr(&bad_key).starts_with("keyledger: unauthorized: "), "{}", stderr(&bad_key));
    assert!(!stderr(&bad_key).contains(bogus) && !stdout(&bad_key).contains(bogus));

    // The same through --admin-key, against an unreachable server: transport, exit 6.
    let port = keyledger_e2e::free_port();
    let unreachable = server.cli(&[
        "keys",
        "list",
        "acme",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--admin-key",
        bogus,
    ]);
    assert_eq!(unreachable.status.code(), Some(6), "{}", stderr(&unreachable));
    assert!(stderr(&unreachable).starts_with("keyledger: transport: "), "{}", stderr(&unreachable));
    assert!(!stderr(&unreachable).contains(bogus));

    // An answer that cannot be written (here a full disk: /dev/full) is not a success: the
    // secret it held is lost, so the command says so and exits 7.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let lost = server
        .command(&server.admin_key, &["keys", "create", "acme", "--name", "lost", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(full)
        .output()
        .expect("run keyledger");
    assert_eq!(lost.status.code(), Some(7), "{}", stderr(&lost));
    assert!(stderr(&lost).contains("could not be written"), "{}", stderr(&lost));
    // So does `init`, whose answer is the first admin key: it names the way back.
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let init = Command::new(BIN)
        .args(["init", "--data-dir", data_dir.to_str().expect("utf-8")])
        .stdout(full)
        .output()
        .expect("run keyledger init");
    assert!(!init.status.success(), "{}", stderr(&init));
    assert!(stderr(&init).contains("admin recover"), "{}", stderr(&init));
    // Any other command's answer too: `log verify` exits 7, it does not panic.
    let verified_dir = dir.path().join("verified");
    let path = verified_dir.to_str().expect("utf-8");
    let made = Command::new(BIN).args(["init", "--data-dir", path]).output().expect("run keyledger init");
    assert!(made.status.success(), "{}", stderr(&made));
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let verify =
        Command::new(BIN).args(["log", "verify", "--data-dir", path]).stdout(full).output().expect("run");
    assert_eq!(verify.status.code(), Some(7), "{}", stderr(&verify));
    assert!(!stderr(&verify).contains("panicked"), "{}", stderr(&verify));

    // A workspace key is not an admin key: 403, exit 3.
    let created = server.json(&["keys", "create", "acme", "--name", "app"]);
    let app_secret = created["secret"].as_str().expect("secret");
    let forbidden = server.cli_with_key(app_secret, &["keys", "list", "acme"]);
    assert_eq!(forbidden.status.code(), Some(3), "{}", stderr(&forbidden));
    assert!(!stderr(&forbidden).contains(app_secret));

    // No admin key at all, or a bad argument: usage, exit 2, nothing sent.
    let missing = Command::new(BIN)
        .args(["keys", "list", "acme", "--url", &server.url])
        .env_remove("KEYLEDGER_ADMIN_KEY")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("admin key is required"), "{}", stderr(&missing));
    let bad_duration = server.cli(&["keys", "create", "acme", "--name", "x", "--expires-in", "soon"]);
    assert_eq!(bad_duration.status.code(), Some(2));
    let empty_update = server.cli(&["keys", "update", created["key_id"].as_str().expect("id")]);
    assert_eq!(empty_update.status.code(), Some(2));

    // An invalid request the server refuses (bad workspace id): exit 5, the field named.
    let invalid = server.cli(&["keys", "create", "Not A Workspace", "--name", "x"]);
    assert_eq!(invalid.status.code(), Some(5), "{}", stderr(&invalid));
    assert!(stderr(&invalid).starts_with("keyledger: invalid_request: "), "{}", stderr(&invalid));
}

#[test]
fn policies_through_the_cli() {
    let server = Server::start(SERVE);
    let empty = server.json(&["policy", "get", "shop"]);
    assert_eq!(empty["workspace"], "shop");
    assert!(empty["max_active_keys"].is_null());

    let set = server.json(&[
        "policy",
        "set",
        "shop",
        "--max-active-keys",
        "1",
        "--require-expiry",
        "--max-lifetime",
        "90d",
        "--key-prefix",
        "sk",
    ]);
    assert_eq!(set["max_active_keys"], 1);
    assert_eq!(set["require_expiry"], true);
    assert_eq!(set["max_lifetime"], "90d");
    assert_eq!(set["key_prefix"], "sk");
    assert_eq!(server.json(&["policy", "get", "shop"]), set);

    let human = server.cli(&["policy", "get", "shop"]);
    assert_eq!(human.status.code(), Some(0));
    assert!(stdout(&human).contains("max active keys:  1"), "{}", stdout(&human));

    // The policy applies: no expiry → conflict; then one key; a second one → conflict.
    let no_expiry = server.cli(&["keys", "create", "shop", "--name", "a"]);
    assert_eq!(no_expiry.status.code(), Some(5), "{}", stderr(&no_expiry));
    assert!(stderr(&no_expiry).starts_with("keyledger: conflict: "), "{}", stderr(&no_expiry));
    let first = server.json(&["keys", "create", "shop", "--name", "a", "--expires-in", "30d"]);
    assert!(first["secret"].as_str().expect("secret").starts_with("sk_live_"));
    let second = server.cli(&["keys", "create", "shop", "--name", "b", "--expires-in", "30d"]);
    assert_eq!(second.status.code(), Some(5));
    // With max_active_keys 1, a rotation without overlap swaps atomically.
    let rotated = server.json(&["keys", "rotate", first["key_id"].as_str().expect("id")]);
    assert_eq!(rotated["previous"]["status"], "revoked");

    let bad = server.cli(&["policy", "set", "shop", "--key-prefix", "Not-Valid"]);
    assert_eq!(bad.status.code(), Some(5), "{}", stderr(&bad));
    assert!(stderr(&bad).starts_with("keyledger: invalid_request: "), "{}", stderr(&bad));
    let zero = server.cli(&["policy", "set", "shop", "--max-active-keys", "0"]);
    assert_eq!(zero.status.code(), Some(2), "refused locally: {}", stderr(&zero));
}

/// Retries `log checkpoint` until the server has signed one (at most every second here).
fn checkpoint(server: &Server, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = server.cli(args);
        if output.status.code() != Some(4) || Instant::now() > deadline {
            return output;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn note_size(note: &str) -> u64 {
    let mut lines = note.lines();
    assert!(lines.next().is_some_and(|origin| !origin.is_empty()), "{note}");
    lines.next().and_then(|size| size.parse().ok()).unwrap_or_else(|| panic!("no size line in {note}"))
}

#[test]
fn log_checkpoint_saves_the_signed_note() {
    let server = Server::start(SERVE);
    server.json(&["keys", "create", "acme", "--name", "a"]);

    let json = checkpoint(&server, &["log", "checkpoint", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let json: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let note = json["note"].as_str().expect("note");
    assert_eq!(note_size(note), json["size"].as_u64().expect("size"));
    assert!(note.contains("\n\n— "), "a signed note has a signature line: {note}");
    assert_eq!(json["root_hash"].as_str().expect("root").len(), 64);

    // To stdout: exactly the note text.
    let plain = checkpoint(&server, &["log", "checkpoint"]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let printed = stdout(&plain);
    assert!(printed.contains("\n\n— "), "{printed}");
    assert!(note_size(&printed) >= note_size(note));

    // To a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("checkpoint.note");
    let saved = checkpoint(&server, &["log", "checkpoint", "--out", file.to_str().expect("utf-8 path")]);
    assert_eq!(saved.status.code(), Some(0), "{}", stderr(&saved));
    assert!(stdout(&saved).is_empty());
    assert!(stderr(&saved).contains("saved the checkpoint"), "{}", stderr(&saved));
    let written = std::fs::read_to_string(&file).expect("note file");
    assert!(written.contains("\n\n— ") && note_size(&written) >= note_size(note), "{written}");

    // Unwritable destination: a local error, exit 2.
    let unwritable = checkpoint(
        &server,
        &["log", "checkpoint", "--out", Path::new("/nonexistent-dir/x.note").to_str().expect("path")],
    );
    assert_eq!(unwritable.status.code(), Some(2), "{}", stderr(&unwritable));

    // The public key matches init's, and the note names its origin.
    let key = server.json(&["log", "public-key"]);
    assert_eq!(key["algorithm"], "ed25519");
    let origin = key["origin"].as_str().expect("origin");
    assert!(note.starts_with(&format!("{origin}\n")), "{note}");

    // Bad admin key: exit 3.
    let denied = server.cli_with_key("kl_live_nope", &["log", "checkpoint"]);
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(BIN).args(["completions", shell]).output().expect("run");
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = stdout(&output);
        assert!(script.contains("keyledger") && script.contains("revoke-all"), "{shell}");
    }
    let bad = Command::new(BIN).args(["completions", "cmd.exe"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn webhooks_through_the_cli_and_the_secret_stays_out_of_the_server_log() {
    let server = Server::start(SERVE);
    let (url, received) = keyledger_e2e::receiver();
    let set = server.json(&["webhook", "set", "shop", "--endpoint", &url, "--event", "key.created"]);
    let secret = set["secret"].as_str().unwrap_or_else(|| panic!("no secret in {set}")).to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(set["events"], serde_json::json!(["key.created"]));
    let get = server.json(&["webhook", "get", "shop"]);
    assert!(get.get("secret").is_none());
    assert_eq!(get["url"], url.as_str());

    server.json(&["keys", "create", "shop", "--name", "a"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let deliveries = loop {
        let deliveries = server.json(&["webhook", "deliveries", "shop", "--limit", "10"]);
        if deliveries["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break deliveries;
        }
        assert!(Instant::now() < deadline, "nothing delivered; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(deliveries["attempts"][0]["outcome"], "delivered", "{deliveries}");
    assert_eq!(deliveries["attempts"][0]["type"], "key.created");
    assert_eq!(received.lock().unwrap().len(), 1);
    let human = server.cli(&["webhook", "deliveries", "shop"]);
    assert!(
        stdout(&human).contains("key.created") && stdout(&human).contains("delivered"),
        "{}",
        stdout(&human)
    );

    let disabled = server.json(&["webhook", "disable", "shop"]);
    assert_eq!(disabled["enabled"], false);
    let missing = server.cli(&["webhook", "get", "nowhere"]);
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));

    let log = server.log();
    assert!(log.contains("webhook delivered"), "each attempt is a log line:\n{log}");
    assert!(!log.contains(&secret) && !log.contains("whsec_"), "the secret reached the log:\n{log}");
}
