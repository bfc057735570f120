//! The key never appears in tracing output or in `Debug`. Alone in its test binary: a
//! global subscriber sees every thread, and no other test can cache a callsite as disabled.

mod support;

use keyledger_tower::{KeyledgerClient, KeyledgerLayer};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_appears_in_tracing_output_or_debug() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let env =
        env_with(|url| KeyledgerClient::builder(&url).timeout(Duration::from_millis(300)).build().unwrap())
            .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = service(
        KeyledgerLayer::new(KeyledgerClient::new(&format!("http://127.0.0.1:{port}")).unwrap()),
        env.seen.clone(),
    );
    env.fake.revoked.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for key in [GOOD, REVOKABLE, NO_SCOPE, SLOW, FIVE_HUNDRED, BAD_REQUEST, GARBAGE] {
        statuses.push(send(&env.app, get_with("/reports", key)).await.status.as_u16());
    }
    statuses.push(send(&down, get_with("/reports", GOOD)).await.status.as_u16());
    assert_eq!(statuses, [200, 401, 403, 503, 503, 503, 503, 503]);

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The log is not empty: it says what happened, by key id and request id.
    assert!(output.contains("key verified") && output.contains(&env.fake.key_id().to_string()), "{output}");
    assert!(output.contains("no verdict") && output.contains("did not answer within"), "{output}");
    assert!(output.contains("verification refused") && output.contains("400"), "{output}");
    assert!(output.contains("unreachable"), "{output}");
    for key in [GOOD, REVOKABLE, NO_SCOPE, SLOW, FIVE_HUNDRED, BAD_REQUEST, GARBAGE] {
        let body = &key["kl_live_".len()..];
        assert!(!output.contains(body), "the key {key} is in the log:\n{output}");
    }

    // Debug of everything a service holds or sees.
    let layer =
        KeyledgerLayer::new(KeyledgerClient::new("http://127.0.0.1:7878").unwrap()).require_scopes(["a"]);
    let debug = format!(
        "{layer:?} {:?} {}",
        tower::Layer::layer(&layer, ()),
        env.seen.headers.lock().unwrap().join(" ")
    );
    assert!(debug.contains("127.0.0.1:7878/v1/verify") && debug.contains("key_"), "{debug}");
    assert!(!debug.contains(&GOOD["kl_live_".len()..]), "{debug}");
}
