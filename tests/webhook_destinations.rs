//! Webhook destinations through the real binary (docs/security.md, "Webhook destinations"):
//! without `--webhook-allow-private`, loopback, private, link-local and cloud-metadata
//! addresses are refused when a webhook is configured; with it, a receiver on loopback gets
//! its deliveries, and cloud-metadata addresses are still refused.

use keyledger_e2e::{Ledger, poll, receiver};
use serde_json::json;
use std::time::Duration;

#[test]
fn internal_destinations_are_refused_unless_the_operator_allows_them() {
    let ledger = Ledger::init();
    let admin = ledger.admin_key.clone();
    let (url, received) = receiver();

    let server = ledger.serve(&[]);
    let http = server.client();
    for refused in
        [url.as_str(), "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.0.0.1/"]
    {
        let resp = http.put("/v1/workspaces/acme/webhook", &admin, &json!({"url": refused}));
        assert_eq!(resp.status, 422, "{refused}: {}", resp.dump());
        assert_eq!(resp.body["error"], "invalid_request", "{}", resp.dump());
        assert!(resp.body["message"].as_str().unwrap_or("").contains("`url`"), "{}", resp.dump());
    }
    assert_eq!(http.get("/v1/workspaces/acme/webhook", &admin).status, 404, "nothing was configured");
    server.stop();

    let server = ledger.serve(&["--webhook-allow-private"]);
    let http = server.client();
    // Cloud metadata stays refused even when private destinations are allowed.
    let resp =
        http.put("/v1/workspaces/acme/webhook", &admin, &json!({"url": "http://169.254.169.254/latest/"}));
    assert_eq!(resp.status, 422, "{}", resp.dump());
    let resp =
        http.put("/v1/workspaces/acme/webhook", &admin, &json!({"url": url, "events": ["key.created"]}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let created = http.post("/v1/workspaces/acme/keys", &admin, &json!({"name": "ci"}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let delivered = poll(Duration::from_secs(15), "the delivery to the loopback receiver", || {
        received.lock().unwrap().iter().find(|b| b["type"] == "key.created").cloned()
    });
    assert_eq!(delivered["data"]["key_id"], created.body["key_id"]);
    server.stop();
}
