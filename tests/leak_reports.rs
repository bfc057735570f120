//! Leak reports through the real binary (docs/leaks.md): GitHub's signed secret-scanning
//! report on `serve --github-scanning-keys`, the public report endpoint whose answer says
//! nothing about what was sent, the workspace's `on_leak` deciding between a
//! notification and a revocation, and the keys file read again on SIGHUP.

use base64::Engine as _;
use keyledger_e2e::{Env, poll, text};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use std::time::Duration;

/// A key of `workspace`: (key id, secret).
fn key(env: &Env, workspace: &str, name: &str) -> (String, String) {
    let created =
        env.http.post(&format!("/v1/workspaces/{workspace}/keys"), env.root(), &json!({"name": name}));
    assert_eq!(created.status, 201, "{}", created.dump());
    (text(&created.body, "key_id"), text(&created.body, "secret"))
}

fn on_leak(env: &Env, workspace: &str, action: &str) {
    let set =
        env.http.put(&format!("/v1/workspaces/{workspace}/policy"), env.root(), &json!({"on_leak": action}));
    assert_eq!(set.status, 200, "{}", set.dump());
    assert_eq!(set.body["on_leak"], action);
    let read = env.http.get(&format!("/v1/workspaces/{workspace}/policy"), env.root());
    assert_eq!(read.body["on_leak"], action, "{}", read.dump());
}

/// The `leak_reported` events of a key.
fn leak_events(env: &Env, key_id: &str) -> Vec<Value> {
    let page = env.http.get(&format!("/v1/keys/{key_id}/events?limit=1000"), env.root());
    assert_eq!(page.status, 200, "{}", page.dump());
    let events = page.body["events"].as_array().cloned().unwrap_or_default();
    events.into_iter().filter(|e| e["kind"] == "leak_reported").collect()
}

fn status(env: &Env, key_id: &str) -> String {
    let view = env.http.get(&format!("/v1/keys/{key_id}"), env.root());
    text(&view.body, "status")
}

fn github_post(env: &Env, body: &Value, identifier: &str, signing: &SigningKey) -> keyledger_e2e::Resp {
    let body = body.to_string();
    let signature: Signature = signing.sign(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    env.http.post_bytes(
        "/v1/leaks/github",
        &[
            ("content-type", "application/json"),
            ("github-public-key-identifier", identifier),
            ("github-public-key-signature", &signature),
        ],
        body.as_bytes(),
    )
}

#[test]
fn github_reports_are_believed_only_when_signed_and_follow_on_leak() {
    let signing = SigningKey::from_bytes(&[7; 32].into()).unwrap();
    let stranger = SigningKey::from_bytes(&[8; 32].into()).unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("github-keys.json");
    let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let document = json!({"public_keys": [{"key_identifier": "gh-1", "key": pem, "is_current": true}]});
    std::fs::write(&keys_file, document.to_string()).unwrap();
    let env = Env::start(&["--github-scanning-keys", keys_file.to_str().unwrap()]);

    on_leak(&env, "strict", "revoke");
    let (noted, noted_secret) = key(&env, "acme", "noted");
    let (killed, killed_secret) = key(&env, "strict", "killed");
    let report = json!([
        {"token": noted_secret, "type": "keyledger_api_key", "url": "https://github.com/o/r/blob/1/a", "source": "content"},
        {"token": killed_secret, "type": "keyledger_api_key", "url": "https://github.com/o/r/blob/1/b", "source": "commit"},
        {"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "type": "keyledger_api_key", "url": "https://github.com/o/r", "source": "content"},
    ]);

    // A signature by another key, an unknown identifier, no signature: 401, nothing recorded.
    let size = env.log_size();
    for refused in [
        github_post(&env, &report, "gh-1", &stranger),
        github_post(&env, &report, "gh-2", &signing),
        env.http.send("POST", "/v1/leaks/github", &[], Some(&report)),
    ] {
        assert_eq!(refused.status, 401, "{}", refused.dump());
        assert_eq!(refused.body["error"], "unauthorized");
    }
    assert_eq!(env.log_size(), size, "a refused report appended");

    let answer = github_post(&env, &report, "gh-1", &signing);
    assert_eq!(answer.status, 200, "{}", answer.dump());
    let labels: Vec<&str> =
        answer.body.as_array().unwrap().iter().map(|f| f["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["true_positive", "true_positive", "false_positive"]);
    let dump = answer.body.to_string();
    assert!(!dump.contains(&noted_secret) && !dump.contains(&killed_secret), "a token was echoed");

    assert_eq!(leak_events(&env, &noted).len(), 1);
    assert_eq!(leak_events(&env, &killed).len(), 1);
    assert_eq!(status(&env, &noted), "active", "on_leak notify keeps the key");
    assert_eq!(status(&env, &killed), "revoked", "on_leak revoke revokes it in the report's batch");
    let refused = env.http.send("POST", "/v1/verify", &[], Some(&json!({"key": killed_secret})));
    assert_eq!(refused.status, 401, "{}", refused.dump());

    // GitHub sends the same report again: recorded once.
    let replay = github_post(&env, &report, "gh-1", &signing);
    assert_eq!(replay.status, 200, "{}", replay.dump());
    assert_eq!(leak_events(&env, &noted).len(), 1);

    // GitHub rotates its key: the file is read again on SIGHUP, and only the new key is believed.
    let pem = stranger.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let rotated = json!({"public_keys": [{"key_identifier": "gh-2", "key": pem, "is_current": true}]});
    std::fs::write(&keys_file, rotated.to_string()).unwrap();
    hangup(&env);
    poll(Duration::from_secs(5), "the new key to be believed after SIGHUP", || {
        (github_post(&env, &report, "gh-2", &stranger).status == 200).then_some(())
    });
    assert_eq!(github_post(&env, &report, "gh-1", &signing).status, 401, "the old key is still believed");
    // A broken file on SIGHUP keeps the keys in force.
    std::fs::write(&keys_file, "{not json").unwrap();
    hangup(&env);
    poll(Duration::from_secs(5), "the broken file to be refused", || {
        env.server.logs().contains("kept the GitHub secret scanning keys in force").then_some(())
    });
    assert_eq!(github_post(&env, &report, "gh-2", &stranger).status, 200);
    assert_eq!(leak_events(&env, &noted).len(), 1, "every replay was recorded once");
}

fn hangup(env: &Env) {
    let sent = std::process::Command::new("kill").args(["-HUP", &env.server.pid().to_string()]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -HUP failed");
}

#[test]
fn the_public_report_answers_the_same_whatever_it_holds_and_revokes_live_keys_it_names() {
    let env = Env::start(&[]);
    on_leak(&env, "acme", "revoke");
    let (live, live_secret) = key(&env, "acme", "live");
    let (gone, gone_secret) = key(&env, "acme", "gone");
    let revoked = env.http.post(&format!("/v1/keys/{gone}/revoke"), env.root(), &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    // The reporter pastes the URL it found the secret at, secret and all.
    let url = format!("https://paste.example/raw?k={live_secret}");
    let report = |secrets: Vec<String>| {
        env.http.send("POST", "/v1/leaks/report", &[], Some(&json!({"secrets": secrets, "url": url})))
    };
    let noise: Vec<String> = (0..3).map(|i| format!("kl_live_not_a_key_{i}")).collect();

    let only_noise = report(noise.clone());
    let with_keys = report([noise.clone(), vec![live_secret.clone(), gone_secret.clone()]].concat());
    assert_eq!(only_noise.status, 202, "{}", only_noise.dump());
    assert_eq!(with_keys.status, 202, "{}", with_keys.dump());
    assert_eq!(only_noise.body, json!({"received": 3}));
    assert_eq!(with_keys.body, json!({"received": 5}), "only the count differs, and it is the caller's own");
    assert!(!with_keys.body.to_string().contains(&live_secret));

    // Recorded after the answer: the live key is reported and revoked, the revoked key not
    // reported again (the public endpoint reports active keys only).
    poll(Duration::from_secs(10), "the public report to be recorded", || {
        (status(&env, &live) == "revoked").then_some(())
    });
    let events = leak_events(&env, &live);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].to_string().contains("public"), "the reporter is named: {events:?}");
    assert!(!events[0].to_string().contains(&live_secret), "the URL is recorded without the secret");
    assert!(events[0].to_string().contains("paste.example/raw?k=[redacted]"), "{events:?}");
    let view = env.http.get(&format!("/v1/keys/{live}"), env.root());
    assert!(!view.body.to_string().contains(&live_secret), "nor in the revocation's reason: {}", view.dump());
    assert!(leak_events(&env, &gone).is_empty());
    let refused = env.http.send("POST", "/v1/verify", &[], Some(&json!({"key": live_secret})));
    assert_eq!(refused.status, 401, "{}", refused.dump());

    // Bad shapes are refused and change nothing; too many strings too.
    let size = env.log_size();
    for bad in [json!({"secret": "x"}), json!(["x"]), json!({"secrets": vec!["x"; 1001]})] {
        let answer = env.http.send("POST", "/v1/leaks/report", &[], Some(&bad));
        assert_eq!(answer.status, 400, "{bad}: {}", answer.dump());
        assert_eq!(answer.body["error"], "invalid_request");
    }
    assert_eq!(env.log_size(), size);

    // Each source has 10 reports a minute (a token every 6 s): five are spent above, so a
    // burst meets the limit within a few more, answered 429 with Retry-After.
    let mut accepted = 0;
    let throttled = loop {
        let answer = report(vec!["nothing".into()]);
        match answer.status {
            202 if accepted < 10 => accepted += 1,
            429 => break answer,
            _ => panic!("after {accepted} more reports: {}", answer.dump()),
        }
    };
    assert!(accepted >= 1, "the budget was spent before the burst");
    assert_eq!(throttled.body["error"], "rate_limited");
    assert!(throttled.header("retry-after").is_some(), "{}", throttled.dump());
}
