//! Webhook destinations through the real binary (docs/security.md, "Webhook destinations"):
//! without `--webhook-allow-private`, loopback, private, link-local and cloud-metadata
//! addresses are refused when a webhook is configured; with it, a receiver on loopback gets
//! its deliveries, and cloud-metadata addresses are still refused.

use keyledger_e2e::{Ledger, poll};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A receiver on loopback: records the JSON body of every request and answers 200.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                received.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

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
