//! The C2SP tlog-tiles read API of the real binary with `serve --public-log`: a stranger
//! mirrors the hash tiles and rebuilds the signed checkpoint's root; entry bundles still need
//! an admin key (docs/api.md, "Tiles").

use keyledger_e2e::Ledger;
use keyledger_verify::merkle::{Hash, TreeHash};

/// The tree of every log keyledger writes (format 2): RFC 6962, SHA-256.
const TREE: TreeHash = TreeHash::Rfc6962;
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use serde_json::json;
use std::time::Duration;

/// `GET path` (with `key` as a bearer key if given): status, `cache-control` and raw bytes.
fn fetch(agent: &ureq::Agent, url: &str, key: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = agent.get(url);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let cache = response.headers().get("cache-control").map_or("", |v| v.to_str().unwrap_or("")).to_owned();
    (response.status().as_u16(), cache, response.body_mut().read_to_vec().expect("body"))
}

#[test]
fn a_public_log_is_mirrored_from_its_tiles_and_entry_bundles_stay_private() {
    let ledger = Ledger::init();
    let server = ledger.serve(&["--public-log", "--checkpoint-interval-secs", "1"]);
    let http = server.client();
    let created = http.post("/v1/workspaces/acme/keys", &ledger.admin_key, &json!({"name": "svc"}));
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    for _ in 0..300 {
        let used = http.get("/v1/verify", &secret);
        assert_eq!(used.status, 200, "{}", used.dump());
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).proxy(None).build().into();
    let key: VerifierKey = ledger.log_public_key.parse().unwrap();

    // A checkpoint covering every event is signed within a second or so; no key needed.
    let log_size = || http.get("/healthz", &ledger.admin_key).body["log_size"].as_u64().unwrap();
    let target = log_size();
    assert!(target > 300);
    let checkpoint = keyledger_e2e::poll(Duration::from_secs(20), "a checkpoint of every event", || {
        let (status, cache, note) = fetch(&agent, &format!("{}/checkpoint", server.url), None);
        assert_eq!(status, 200);
        assert_eq!(cache, "public, max-age=5");
        let checkpoint = open_checkpoint(&String::from_utf8(note).unwrap(), &key).unwrap();
        (checkpoint.size >= target).then_some(checkpoint)
    });
    let size = checkpoint.size;

    // Mirror the level-0 tiles as a stranger and rebuild the signed root.
    let mut leaves: Vec<Hash> = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let path = if width == 256 { format!("0/{n:03}") } else { format!("0/{n:03}.p/{width}") };
        let (status, cache, tile) = fetch(&agent, &format!("{}/tile/{path}", server.url), None);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&tile));
        let expected = if width == 256 { "public, max-age=31536000, immutable" } else { "public, max-age=5" };
        assert_eq!(cache, expected, "{path}");
        assert_eq!(tile.len() as u64, width * 32);
        leaves.extend(tile.chunks_exact(32).map(|h| Hash::try_from(h).unwrap()));
    }
    assert_eq!(TREE.root_from_leaves(&leaves), checkpoint.root);
    // Nothing beyond the checkpointed tree.
    let (status, _, _) = fetch(&agent, &format!("{}/tile/0/{:03}", server.url, size / 256 + 1), None);
    assert_eq!(status, 404);

    // Entry bundles are never public; with the admin key they hash to the mirrored leaves.
    let (status, _, body) = fetch(&agent, &format!("{}/tile/entries/000", server.url), None);
    assert_eq!(status, 401);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "unauthorized");
    let (status, cache, mut bundle) =
        fetch(&agent, &format!("{}/tile/entries/000", server.url), Some(&ledger.admin_key));
    assert_eq!(status, 200);
    assert_eq!(cache, "private, max-age=31536000, immutable");
    let mut seq = 0;
    while !bundle.is_empty() {
        let len = usize::from(u16::from_be_bytes([bundle[0], bundle[1]]));
        let entry: Vec<u8> = bundle.drain(..2 + len).skip(2).collect();
        assert_eq!(TREE.leaf(&entry), leaves[seq], "entry {seq}");
        assert_eq!(keyledger_core::decode_event(&entry).unwrap().seq, seq as u64);
        seq += 1;
    }
    assert_eq!(seq, 256);
    server.stop();
}
