//! Usage credits through the real binary (docs/credits.md): create with credits, spend
//! through JSON verify and forward-auth, 429 `usage_exceeded`, top-ups, the
//! `key.credits_low` webhook, and the balance after a SIGKILL.

use keyledger_e2e::{Env, Ledger, Server, poll, receiver, text};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn verify_json(env: &Env, secret: &str, cost: Option<u64>) -> keyledger_e2e::Resp {
    let mut body = json!({"key": secret});
    if let Some(cost) = cost {
        body["cost"] = json!(cost);
    }
    env.http.send("POST", "/v1/verify", &[], Some(&body))
}

/// Every usage event of a key, through the audit API.
fn usage_events(http: &keyledger_e2e::Client, admin: &str, key_id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut path = format!("/v1/keys/{key_id}/events?kind=usage&limit=1000");
        if !cursor.is_empty() {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = http.get(&path, admin);
        assert_eq!(page.status, 200, "{}", page.dump());
        events.extend(page.body["events"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return events,
        }
    }
}

#[test]
fn credits_are_spent_refused_topped_up_and_announced() {
    let env = Env::start(&["--webhook-allow-private"]);
    let (url, received) = receiver();
    let hook = env.http.put(
        "/v1/workspaces/acme/webhook",
        env.root(),
        &json!({"url": url, "events": ["key.credits_low"]}),
    );
    assert_eq!(hook.status, 200, "{}", hook.dump());

    // Bad credits are refused, naming the field, and change nothing.
    let before = env.log_size();
    for (credits, field) in [
        (json!({"remaining": -1}), "credits.remaining"),
        (json!({"remaining": 5, "refill": {"amount": 5, "interval": "weekly"}}), "credits.refill.interval"),
        (
            json!({"remaining": 5, "refill": {"amount": 5, "interval": "monthly", "day": 32}}),
            "credits.refill.day",
        ),
        (json!({"remaining": 9_007_199_254_740_993u64}), "credits.remaining"),
    ] {
        let resp = env.http.post(
            "/v1/workspaces/acme/keys",
            env.root(),
            &json!({"name": "bad", "credits": credits}),
        );
        // A negative number does not match the schema (422); a bad value names its field (400).
        let expected = if credits["remaining"] == -1 { 422 } else { 400 };
        assert_eq!(resp.status, expected, "{}", resp.dump());
        assert_eq!(resp.body["error"], "invalid_request");
        assert!(resp.body["message"].as_str().unwrap().contains(field), "{}", resp.dump());
    }
    let admin = env.http.post(
        "/v1/workspaces/_ledger/keys",
        env.root(),
        &json!({"name": "a", "credits": {"remaining": 1}}),
    );
    assert_eq!(admin.status, 400, "admin keys are never metered: {}", admin.dump());
    assert_eq!(env.log_size(), before, "refused creates append nothing");

    let credits = json!({"remaining": 5, "low_threshold": 2, "refill": {"amount": 100, "interval": "monthly", "day": 15}});
    let created = env.http.post(
        "/v1/workspaces/acme/keys",
        env.root(),
        &json!({"name": "metered", "credits": credits}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    assert_eq!(
        created.body["credits"],
        json!({"remaining": 5, "low_threshold": 2, "refilled_at": null,
               "refill": {"amount": 100, "interval": "monthly", "day": 15}})
    );
    let (key_id, secret) = (text(&created.body, "key_id"), text(&created.body, "secret"));

    let spent = verify_json(&env, &secret, Some(2));
    assert_eq!(spent.status, 200, "{}", spent.dump());
    assert_eq!(spent.body["credits_remaining"], 3);
    // Forward-auth: `?cost=`, then the header; 3 -> 1 crosses the threshold 2.
    let auth = [("x-api-key", secret.as_str())];
    let forward = env.http.send("GET", "/v1/verify?cost=2", &auth, None);
    assert_eq!(forward.status, 200, "{}", forward.dump());
    assert_eq!(forward.body["credits_remaining"], 1);
    let refused = env.http.send("GET", "/v1/verify", &[auth[0], ("x-keyledger-cost", "5")], None);
    assert_eq!(refused.status, 429, "{}", refused.dump());
    assert_eq!(
        (refused.body["error"].as_str(), refused.body["reason"].as_str()),
        (Some("usage_exceeded"), Some("usage_exceeded"))
    );
    assert_eq!(refused.body["valid"], false);
    let bad_cost = env.http.send("GET", "/v1/verify?cost=-1", &auth, None);
    assert_eq!(bad_cost.status, 400, "{}", bad_cost.dump());
    // A cost of 0 in a header, which the client behind nginx or Traefik can send, is refused
    // (it would let a key out of credits through); the gateway asks it in the query.
    let free = env.http.send("GET", "/v1/verify", &[auth[0], ("x-keyledger-cost", "0")], None);
    assert_eq!((free.status, free.body["error"].as_str()), (400, Some("invalid_request")), "{}", free.dump());
    assert!(free.body["message"].as_str().is_some_and(|m| m.contains("x-keyledger-cost")), "{}", free.dump());
    let checked = env.http.send("GET", "/v1/verify?cost=0", &[auth[0], ("x-keyledger-cost", "0")], None);
    assert_eq!((checked.status, &checked.body["credits_remaining"]), (200, &json!(1)), "{}", checked.dump());
    let check = verify_json(&env, &secret, Some(0));
    assert_eq!((check.status, &check.body["credits_remaining"]), (200, &json!(1)), "cost 0 only checks");
    assert_eq!(verify_json(&env, &secret, None).body["credits_remaining"], 0, "the default cost is 1");
    assert_eq!(verify_json(&env, &secret, None).status, 429);

    // Top-ups: exactly one of add and set.
    let path = format!("/v1/keys/{key_id}/credits");
    assert_eq!(env.http.post(&path, env.root(), &json!({"add": 1, "set": 2})).status, 400);
    assert_eq!(env.http.post(&path, env.root(), &json!({})).status, 400);
    let topped = env.http.post(&path, env.root(), &json!({"add": 10}));
    assert_eq!(topped.status, 200, "{}", topped.dump());
    assert_eq!(topped.body["credits"]["remaining"], 10);
    assert_eq!(env.key(&key_id)["credits"]["remaining"], 10);
    assert_eq!(verify_json(&env, &secret, Some(9)).body["credits_remaining"], 1, "10 -> 1 crosses again");

    // The spends are `used` events carrying their cost; the refusals `denied` ones.
    let events = usage_events(&env.http, env.root(), &key_id);
    let costs: Vec<_> =
        events.iter().filter(|e| e["kind"] == "used").map(|e| e["cost"].as_u64().unwrap()).collect();
    // (The header's cost 0 was refused before any lookup: no event; the query's is one.)
    assert_eq!(costs, [2, 2, 0, 0, 1, 9]);
    let denied: Vec<_> =
        events.iter().filter(|e| e["kind"] == "denied").map(|e| e["reason"].clone()).collect();
    assert_eq!(denied, [json!("usage_exceeded"), json!("usage_exceeded")]);

    // One `key.credits_low` per crossing: 3 -> 1 and 10 -> 1.
    let lows = poll(Duration::from_secs(20), "two key.credits_low deliveries", || {
        let got: Vec<Value> =
            received.lock().unwrap().iter().filter(|b| b["type"] == "key.credits_low").cloned().collect();
        (got.len() >= 2).then_some(got)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let all = received.lock().unwrap().iter().filter(|b| b["type"] == "key.credits_low").count();
    assert_eq!(all, 2, "no other spend crossed the threshold");
    assert_eq!(lows[0]["data"]["key_id"], key_id.as_str());
    assert_eq!(
        (lows[0]["data"]["remaining"].as_u64(), lows[1]["data"]["remaining"].as_u64()),
        (Some(1), Some(1))
    );

    // A rotation moves the balance; the old key keeps none.
    let rotated = env.http.post(&format!("/v1/keys/{key_id}/rotate"), env.root(), &json!({"overlap": "1h"}));
    assert_eq!(rotated.status, 201, "{}", rotated.dump());
    assert_eq!(rotated.body["key"]["credits"]["remaining"], 1);
    assert_eq!(rotated.body["previous"]["credits"]["remaining"], 0);
    assert_eq!(verify_json(&env, &secret, None).status, 429, "the old key has nothing left to spend");
    assert_eq!(verify_json(&env, &text(&rotated.body["key"], "secret"), None).status, 200);
}

/// Verifications spending 1 each run from several threads until the server is SIGKILLed.
/// After the restart the balance is exactly the initial one minus the spends in the log, and
/// every acknowledged spend is among them: usage events are written to the log before verify
/// answers (docs/operations.md, "Durability"), and a SIGKILL loses no written event, so the
/// log may hold a few spends that were never answered, never the reverse.
#[test]
fn after_a_sigkill_the_balance_equals_the_spends_in_the_log() {
    const INITIAL: u64 = 1_000_000;
    let ledger = Ledger::init();
    let server = ledger.serve(&[]);
    let http = server.client();
    let admin = ledger.admin_key.clone();
    let created = http.post(
        "/v1/workspaces/acme/keys",
        &admin,
        &json!({"name": "metered", "credits": {"remaining": INITIAL}}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let (key_id, secret) = (text(&created.body, "key_id"), text(&created.body, "secret"));

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let lowest_answered = Arc::new(AtomicU64::new(INITIAL));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (http, secret, stop, acknowledged, lowest) = (
                server.client(),
                secret.clone(),
                stop.clone(),
                acknowledged.clone(),
                lowest_answered.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(resp) = http.try_send("POST", "/v1/verify", &[], Some(&json!({"key": secret})))
                    else {
                        return;
                    };
                    if resp.status == 200 {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        lowest.fetch_min(resp.body["credits_remaining"].as_u64().unwrap(), Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill").args(["-KILL", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    drop(server);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    assert!(acknowledged > 50, "the load ran: {acknowledged}");

    // The crashed data dir verifies (projections equal a replay, balances included).
    let verified = ledger.log_verify();
    assert!(verified.success(), "{}", verified.stderr);

    let server: Server = ledger.serve(&[]);
    let http = server.client();
    let view = http.get(&format!("/v1/keys/{key_id}"), &admin);
    let remaining = view.body["credits"]["remaining"].as_u64().unwrap();
    let events = usage_events(&http, &admin, &key_id);
    let spent: u64 = events.iter().filter(|e| e["kind"] == "used").map(|e| e["cost"].as_u64().unwrap()).sum();
    assert_eq!(INITIAL - remaining, spent, "the balance is exactly the spends in the log");
    assert!(spent >= acknowledged, "every acknowledged spend survived: {spent} < {acknowledged}");
    assert!(remaining <= lowest_answered.load(Ordering::Relaxed), "no answered balance came back");
    eprintln!(
        "credits-crash: acknowledged {acknowledged}, in the log {spent} (unanswered {})",
        spent - acknowledged
    );
    // Spending continues from the recovered balance, never from a stale one.
    let resp = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret})));
    assert_eq!(resp.body["credits_remaining"], remaining - 1, "{}", resp.dump());
    server.stop();
    let verified = ledger.log_verify();
    assert!(verified.success(), "{}", verified.stderr);
}
