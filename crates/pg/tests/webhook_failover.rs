//! Webhooks with several nodes (docs/webhooks.md, "Several nodes"): the node holding the
//! `jobs` lease sends, every other node's outbox follows its attempts, and the node that
//! takes over sends nothing the last holder had settled.
use keyledger_ledger::{EngineOptions, WebhookOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{admin, spec, ws};

/// A receiver on loopback answering 200 to every delivery; counts deliveries by id.
fn receiver() -> (String, Arc<Mutex<BTreeMap<String, u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let counts = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut id, mut length) = (None, 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("keyledger-webhook-id:") {
                    id = Some(value.trim().to_owned());
                }
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if let Some(id) = id {
                *counts.lock().unwrap().entry(id).or_insert(0) += 1;
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_the_holders_deliveries_and_the_next_holder_sends_none_again() {
    let ledger = support::Ledger::new();
    let options = EngineOptions {
        webhooks: WebhookOptions {
            allow_private: true,
            poll_interval: Duration::from_millis(50),
            ..WebhookOptions::default()
        },
        ..ledger.options()
    };
    let init = ledger.init("a");
    let a = ledger.open_with(&ledger.dir("a"), options.clone());
    let b = ledger.open_with(&ledger.node_dir("b", "a"), options);
    wait_for("a node takes the jobs lease", Duration::from_secs(10), || a.runs_jobs() || b.runs_jobs()).await;
    let (holder, standby) = if a.runs_jobs() { (a, b) } else { (b, a) };

    let (url, seen) = receiver();
    let caller = admin(&holder, init.admin_key.expose()).await;
    holder.set_webhook(caller.clone(), ws("acme"), url, vec!["key.created".into()]).await.unwrap();
    for i in 0..20 {
        holder.create(caller.clone(), ws("acme"), spec(&format!("k{i}"), &["read"])).await.unwrap();
    }
    let delivered = || seen.lock().unwrap().len();
    wait_for("the holder delivers every key.created", Duration::from_secs(20), || delivered() == 20).await;

    // The standby queued the same twenty and applies the holder's attempts: nothing of it
    // waits there any more, and its listing shows what the holder did.
    wait_for("the standby's outbox empties", Duration::from_secs(10), || {
        standby.webhook_deliveries(&ws("acme"), 100).unwrap().pending == 0
    })
    .await;
    let listing = standby.webhook_deliveries(&ws("acme"), 100).unwrap();
    assert_eq!(listing.attempts.iter().filter(|a| a.outcome.as_str() == "delivered").count(), 20);

    // The holder stops; the standby takes over and sends none of them again.
    holder.shutdown().await;
    wait_for("the standby takes the lease", Duration::from_secs(10), || standby.runs_jobs()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|&times| times == 1), "sent again after the takeover: {seen:?}");
    standby.shutdown().await;
}
