//! Hardening of the admin API through the real binary (docs/security.md, "Request bounds"):
//! idempotent replays only to a still valid and still authorised admin key, request bodies
//! refused without being buffered, failed admin authentications throttled per source, and a
//! `/healthz` that tells strangers only that the service is up.

use keyledger_e2e::{Env, Resp, Server, text};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What these tests do often, on top of [`Env`].
trait AdminKeys {
    /// Creates an admin key (workspace `_ledger`) with the root key; returns (id, secret).
    fn admin_key(&self, scopes: &[&str], resources: &[&str]) -> (String, String);
    fn idempotent_post(&self, path: &str, key: &str, idempotency_key: &str, body: &Value) -> Resp;
}

impl AdminKeys for Env {
    fn admin_key(&self, scopes: &[&str], resources: &[&str]) -> (String, String) {
        let body = json!({"name": "admin", "scopes": scopes, "resources": resources});
        let resp = self.http.post("/v1/workspaces/_ledger/keys", self.root(), &body);
        assert_eq!(resp.status, 201, "{}", resp.dump());
        (text(&resp.body, "key_id"), text(&resp.body, "secret"))
    }

    fn idempotent_post(&self, path: &str, key: &str, idempotency_key: &str, body: &Value) -> Resp {
        let headers = [("authorization", &*format!("Bearer {key}")), ("idempotency-key", idempotency_key)];
        self.http.send("POST", path, &headers, Some(body))
    }
}

fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert!(resp.body["message"].is_string() && resp.body["request_id"].is_string(), "{}", resp.dump());
}

const WRITER: &[&str] = &["ledger:keys:write", "ledger:keys:read"];

#[test]
fn a_revoked_admin_key_cannot_replay_a_create() {
    let env = Env::start(&[]);
    let (admin_id, admin) = env.admin_key(WRITER, &[]);
    let path = "/v1/workspaces/acme/keys";
    let body = json!({"name": "svc-a"});
    let first = env.idempotent_post(path, &admin, "idem-42", &body);
    assert_eq!(first.status, 201, "{}", first.dump());
    let replay = env.idempotent_post(path, &admin, "idem-42", &body);
    assert_eq!(replay.status, 201, "a valid key still gets its replay: {}", replay.dump());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body["secret"], first.body["secret"]);

    let revoked = env.http.post(&format!("/v1/keys/{admin_id}/revoke"), env.root(), &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    let after = env.idempotent_post(path, &admin, "idem-42", &body);
    assert_error(&after, 401, "invalid_api_key");
    assert!(!after.dump().contains(first.body["secret"].as_str().unwrap()), "{}", after.dump());
}

#[test]
fn a_disabled_admin_key_cannot_replay_a_rotate() {
    let env = Env::start(&[]);
    let (admin_id, admin) = env.admin_key(WRITER, &[]);
    let created = env.http.post("/v1/workspaces/acme/keys", env.root(), &json!({"name": "svc"}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let path = format!("/v1/keys/{}/rotate", text(&created.body, "key_id"));
    let body = json!({"overlap": "1h"});
    let first = env.idempotent_post(&path, &admin, "rot-1", &body);
    assert_eq!(first.status, 201, "{}", first.dump());

    let disabled = env.http.post(&format!("/v1/keys/{admin_id}/disable"), env.root(), &json!({}));
    assert_eq!(disabled.status, 200, "{}", disabled.dump());
    let after = env.idempotent_post(&path, &admin, "rot-1", &body);
    assert_error(&after, 401, "invalid_api_key");
    let secret = first.body["key"]["secret"].as_str().expect("rotate answers the new secret");
    assert!(!after.dump().contains(secret), "{}", after.dump());

    // Enabled again, the key is what it was: the replay is served once more.
    let enabled = env.http.post(&format!("/v1/keys/{admin_id}/enable"), env.root(), &json!({}));
    assert_eq!(enabled.status, 200, "{}", enabled.dump());
    let replay = env.idempotent_post(&path, &admin, "rot-1", &body);
    assert_eq!(replay.status, 201, "{}", replay.dump());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[test]
fn a_replay_needs_the_authority_of_the_original_request() {
    let env = Env::start(&[]);
    let (admin_id, admin) = env.admin_key(WRITER, &["a", "b"]);
    let path = "/v1/workspaces/b/keys";
    let body = json!({"name": "svc-b"});
    let first = env.idempotent_post(path, &admin, "idem-b", &body);
    assert_eq!(first.status, 201, "{}", first.dump());

    // The same key presented in another header form is the same caller.
    let headers = [("x-api-key", admin.as_str()), ("idempotency-key", "idem-b")];
    let other_form = env.http.send("POST", path, &headers, Some(&body));
    assert_eq!(other_form.status, 201, "{}", other_form.dump());
    assert_eq!(other_form.header("idempotent-replayed"), Some("true"), "{}", other_form.dump());
    assert_eq!(other_form.body["secret"], first.body["secret"]);

    // Narrowed to workspace a, the key may no longer see b: the replay answers as a new
    // request would (404), without the secret.
    let narrowed = env.http.patch(&format!("/v1/keys/{admin_id}"), env.root(), &json!({"resources": ["a"]}));
    assert_eq!(narrowed.status, 200, "{}", narrowed.dump());
    let after = env.idempotent_post(path, &admin, "idem-b", &body);
    assert_error(&after, 404, "not_found");
    assert!(!after.dump().contains(first.body["secret"].as_str().unwrap()), "{}", after.dump());

    // Another admin key with the same Idempotency-Key is another request altogether.
    let (_, other) = env.admin_key(WRITER, &[]);
    let fresh = env.idempotent_post(path, &other, "idem-b", &body);
    assert_eq!(fresh.status, 201, "{}", fresh.dump());
    assert_eq!(fresh.header("idempotent-replayed"), None);
    assert_ne!(fresh.body["secret"], first.body["secret"]);
}

/// The peak resident set of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM value");
    kib * 1024
}

/// Sends `POST path` with a `Content-Length: size` body of zeros over a raw connection, as
/// far as the server reads it; returns the status line of the answer, if one came.
fn post_huge_body(server: &Server, path: &str, key: &str, size: usize) -> Option<String> {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write the head");
    let mut reader = stream.try_clone().expect("clone the stream");
    let answer = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..n]);
            if buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&buffer).lines().next().map(str::to_owned)
    });
    let zeros = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = zeros.len().min(size - sent);
        if stream.write_all(&zeros[..n]).is_err() {
            break; // the server has answered and closed: the rest is not read
        }
        sent += n;
    }
    answer.join().expect("reader thread")
}

#[test]
fn a_refused_body_is_never_buffered() {
    let env = Env::start(&[]);
    // A `_ledger` key with no scope at all is enough to reach the body of a revoke.
    let (_, nobody) = env.admin_key(&[], &["zz"]);
    let path = format!("/v1/keys/{}/revoke", env.ledger.admin_key_id);
    let small = env.http.post(&path, &nobody, &json!({"reason": "x".repeat(100 * 1024)}));
    assert_error(&small, 413, "payload_too_large");

    let pid = env.server.pid();
    let before = peak_rss(pid);
    let size = 64 << 20;
    let status = post_huge_body(&env.server, &path, &nobody, size);
    let after = peak_rss(pid);
    assert!(
        after.saturating_sub(before) < 16 << 20,
        "a refused 64 MiB body grew the server's peak memory from {before} to {after} bytes"
    );
    let status = status.expect("the server answers before closing");
    assert!(status.contains(" 413 "), "{status}");
    // The server still serves, and its own revoke was not carried out.
    let root = env.http.get(&format!("/v1/keys/{}", env.ledger.admin_key_id), env.root());
    assert_eq!(root.status, 200, "{}", root.dump());
    assert_eq!(root.body["status"], "active", "{}", root.dump());
}

#[test]
fn healthz_tells_strangers_only_that_the_service_is_up() {
    let env = Env::start(&[]);
    let stranger = env.http.send("GET", "/healthz", &[], None);
    assert_eq!(stranger.status, 200, "{}", stranger.dump());
    assert_eq!(stranger.body, json!({"status": "ok"}));

    let admin = env.http.get("/healthz", env.root());
    assert_eq!(admin.status, 200, "{}", admin.dump());
    assert_eq!(admin.body["status"], "ok");
    assert!(admin.body["log_size"].as_u64().is_some_and(|n| n > 0), "{}", admin.dump());

    // A key without `ledger:audit:read` sees no more than a stranger would have.
    let (_, writer) = env.admin_key(WRITER, &[]);
    let refused = env.http.get("/healthz", &writer);
    assert_error(&refused, 403, "forbidden");
    // A wrong key is refused like on every admin route.
    let wrong = env.http.get("/healthz", "kl_live_0000000000000000000000000000000000000000000000000");
    assert_eq!(wrong.status, 401, "{}", wrong.dump());

    let detailed = Env::start(&["--healthz-details"]);
    let open = detailed.http.send("GET", "/healthz", &[], None);
    assert_eq!(open.status, 200, "{}", open.dump());
    assert!(open.body["log_size"].as_u64().is_some(), "{}", open.dump());
}

#[test]
fn failed_admin_authentications_are_throttled_per_source() {
    let env = Env::start(&[]);
    let wrong_keys: Vec<String> = (0..20).map(|i| format!("kl_live_wrong{i:0>44}")).collect();
    let statuses: Vec<u16> =
        wrong_keys.iter().map(|key| env.http.get("/v1/workspaces/acme/keys", key).status).collect();
    let limited =
        statuses.iter().position(|&s| s == 429).unwrap_or_else(|| panic!("never 429: {statuses:?}"));
    assert!(limited >= 5, "{statuses:?}");
    assert!(statuses[..limited].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[limited..].iter().all(|&s| s == 429), "{statuses:?}");

    // Once throttled, the source's failed authentications answer 429 with `Retry-After`
    // (a valid key still gets in: `a_valid_admin_key_is_never_throttled_by_failures_from_its_source`).
    let throttled = env.http.get("/v1/workspaces/acme/keys", &wrong_keys[0]);
    assert_error(&throttled, 429, "rate_limited");
    let retry_after: u64 = throttled.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{}", throttled.dump());

    // Verification has its own budget (off by default) and is not affected.
    let verify = env.http.send("POST", "/v1/verify", &[], Some(&json!({"key": wrong_keys[0]})));
    assert_eq!(verify.status, 401, "{}", verify.dump());

    // Off with 0.
    let off = Env::start(&["--throttle-failed-admin-auth", "0"]);
    for key in &wrong_keys {
        assert_eq!(off.http.get("/v1/workspaces/acme/keys", key).status, 401);
    }
    assert_eq!(off.http.get("/v1/workspaces/acme/keys", off.root()).status, 200);
}

/// `--trust-forwarded-for` is meant for the gateways' forward-auth calls; without a
/// `--trusted-proxy` range it must not let a caller of the admin API pick a fresh address
/// (and budget) for each guess: the throttle counts the TCP peer, as source allow-lists do.
#[test]
fn a_forged_forwarded_address_does_not_escape_the_admin_throttle() {
    let env = Env::start(&["--trust-forwarded-for", "--throttle-failed-admin-auth", "3"]);
    let statuses: Vec<u16> = (0..6)
        .map(|i| {
            let key = format!("kl_live_forger{i:0>43}");
            let forged = format!("198.51.100.{}", i + 1);
            let headers = [("authorization", format!("Bearer {key}")), ("x-forwarded-for", forged)];
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            env.http.send("GET", "/v1/workspaces/acme/keys", &headers, None).status
        })
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
}

#[test]
fn a_valid_admin_key_is_never_throttled_by_failures_from_its_source() {
    // A stranger behind the same proxy address spends the source's whole budget...
    let env = Env::start(&["--throttle-failed-admin-auth", "3"]);
    let (_, admin) = env.admin_key(&["ledger:keys:write", "ledger:keys:read"], &[]);
    let wrong = |i: usize| format!("kl_live_stranger{i:0>41}");
    let statuses: Vec<u16> =
        (0..6).map(|i| env.http.get("/v1/workspaces/acme/keys", &wrong(i)).status).collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);

    // ...and every admin of that address still gets in, an emergency revoke included.
    let listed = env.http.get("/v1/workspaces/acme/keys", env.root());
    assert_eq!(listed.status, 200, "{}", listed.dump());
    let created =
        env.http.post("/v1/workspaces/acme/keys", &admin, &json!({"name": "leaked", "scopes": ["read"]}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let leaked = text(&created.body, "key_id");
    let revoked =
        env.http.post(&format!("/v1/keys/{leaked}/revoke"), &admin, &json!({"reason": "compromised"}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());

    // A valid key does not refill the budget: the stranger's next guess is still refused.
    assert_error(&env.http.get("/v1/workspaces/acme/keys", &wrong(6)), 429, "rate_limited");
}

const ALL_SCOPES: &[&str] =
    &["ledger:keys:read", "ledger:keys:write", "ledger:audit:read", "ledger:export", "ledger:admin"];

/// A rotation replayed after its caller was narrowed must not hand back the full-admin
/// secret: the authority rule runs before the replay (docs/security.md, "Request bounds").
#[test]
fn a_narrowed_admin_key_cannot_replay_a_rotate_of_a_stronger_key() {
    let env = Env::start(&[]);
    let (admin_id, admin) = env.admin_key(ALL_SCOPES, &[]);
    let path = format!("/v1/keys/{}/rotate", env.ledger.admin_key_id);
    let body = json!({"overlap": "1h"});
    let first = env.idempotent_post(&path, &admin, "rot-full", &body);
    assert_eq!(first.status, 201, "{}", first.dump());
    let secret = first.body["key"]["secret"].as_str().expect("rotate answers the new secret").to_owned();

    let narrowed = env.http.patch(
        &format!("/v1/keys/{admin_id}"),
        env.root(),
        &json!({"scopes": ["ledger:keys:write", "ledger:admin"]}),
    );
    assert_eq!(narrowed.status, 200, "{}", narrowed.dump());
    let after = env.idempotent_post(&path, &admin, "rot-full", &body);
    assert_error(&after, 403, "forbidden");
    assert!(!after.dump().contains(&secret), "{}", after.dump());
}

/// A create of a key without expiry, replayed after its caller was given an expiry, must
/// not hand back the secret: a key with an expiry may not issue a key without one.
#[test]
fn an_admin_key_given_an_expiry_cannot_replay_a_create_of_a_key_without_one() {
    let env = Env::start(&[]);
    let (admin_id, admin) = env.admin_key(ALL_SCOPES, &[]);
    let path = "/v1/workspaces/_ledger/keys";
    let body = json!({"name": "forever", "scopes": ["ledger:keys:read"]});
    let first = env.idempotent_post(path, &admin, "create-forever", &body);
    assert_eq!(first.status, 201, "{}", first.dump());
    let secret = text(&first.body, "secret");
    // An honest retry is still answered with the same key.
    let replay = env.idempotent_post(path, &admin, "create-forever", &body);
    assert_eq!(replay.status, 201, "{}", replay.dump());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let expiring = env.http.patch(&format!("/v1/keys/{admin_id}"), env.root(), &json!({"expires_in": "1h"}));
    assert_eq!(expiring.status, 200, "{}", expiring.dump());
    let after = env.idempotent_post(path, &admin, "create-forever", &body);
    assert_error(&after, 403, "forbidden");
    assert!(!after.dump().contains(&secret), "{}", after.dump());
}

/// An honest retry of a create whose `expires_at` has passed meanwhile is still replayed:
/// "must be in the future" is not checked before a replay.
#[test]
fn a_replay_is_served_even_when_the_requested_expiry_has_passed() {
    let env = Env::start(&[]);
    let (_, admin) = env.admin_key(WRITER, &[]);
    let path = "/v1/workspaces/acme/keys";
    let soon = keyledger_core::Timestamp::now().plus_micros(2_000_000).to_rfc3339();
    let body = json!({"name": "short", "expires_at": soon});
    let first = env.idempotent_post(path, &admin, "create-short", &body);
    assert_eq!(first.status, 201, "{}", first.dump());
    std::thread::sleep(Duration::from_secs(3));
    let replay = env.idempotent_post(path, &admin, "create-short", &body);
    assert_eq!(replay.status, 201, "{}", replay.dump());
    assert_eq!(replay.body["secret"], first.body["secret"]);
}
