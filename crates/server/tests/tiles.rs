//! The C2SP tlog-tiles read API driven in-process: tile contents against the stored tree,
//! the widths a checkpoint implies, entry bundles, access and caching (docs/api.md, "Tiles").

use axum::http::StatusCode;
use keyledger_core::{RequestId, Timestamp, UsageContext, WorkspaceId, decode_event};
use keyledger_ledger::{Caller, EngineOptions, VerifyRequirements};
use keyledger_log::proof::NodeSource;
use keyledger_server::ServerConfig;
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
use serde_json::json;
use std::collections::HashMap;
use support::{Answer, spec};

mod support;

/// The tree of every log keyledger writes (format 2): RFC 6962, SHA-256.
const TREE: TreeHash = TreeHash::Rfc6962;

/// The API over a log, and the secret of a key in `acme` that the log's events verified.
struct Log {
    api: support::Api,
    secret: String,
}

impl std::ops::Deref for Log {
    type Target = support::Api;

    fn deref(&self) -> &support::Api {
        &self.api
    }
}

/// A log of about `uses` events (a key in `acme` verified `uses` times), checkpointed.
async fn log(uses: usize, config: ServerConfig) -> Log {
    let api = support::open(&support::init(), EngineOptions::default(), config);
    let engine = api.engine.clone();
    let secret = tokio::task::spawn_blocking(move || {
        let acme: WorkspaceId = "acme".parse().unwrap();
        let (_, secret) =
            engine.create_blocking(Caller::system(), acme, spec("svc", &["read"], vec![])).unwrap();
        secret.expose().to_owned()
    })
    .await
    .unwrap();
    let log = Log { api, secret };
    log.uses(uses).await;
    log.engine.checkpoint_now().await.unwrap();
    log
}

impl Log {
    async fn uses(&self, count: usize) {
        for _ in 0..count {
            let id = RequestId::generate(Timestamp::now().millis());
            let wants = VerifyRequirements { scopes: vec!["read".into()], ..Default::default() };
            self.engine.verify(id, &self.secret, wants, UsageContext::default()).await.unwrap();
        }
    }

    async fn get_with(&self, uri: &str, key: Option<&str>) -> Answer {
        self.api.send(support::request("GET", uri, key, &[], None)).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.get_with(uri, Some(&self.admin.clone())).await
    }

    /// A tile that must be served: its bytes.
    async fn tile(&self, path: &str) -> Vec<u8> {
        let answer = self.get(&format!("/tile/{path}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        answer.bytes
    }

    fn checkpoint_size(&self) -> u64 {
        self.engine.log().latest_checkpoint().unwrap().size
    }

    /// An admin key created through the API.
    async fn admin_key(&self, scopes: &[&str], resources: &[&str]) -> String {
        let body = json!({"name": "auditor", "scopes": scopes, "resources": resources});
        let answer = self.api.admin("POST", "/v1/workspaces/_ledger/keys", Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        answer.body["secret"].as_str().unwrap().to_owned()
    }
}

fn hashes(tile: &[u8]) -> Vec<Hash> {
    assert_eq!(tile.len() % 32, 0);
    tile.chunks_exact(32).map(|h| h.try_into().unwrap()).collect()
}

/// The 3-digit-group spelling of a tile index.
/// The `hashes` of a proof answer, as tlog_tiles hashes.
fn proof_hashes(answer: &Answer) -> Vec<tlog_tiles::tlog::Hash> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.body["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| tlog_tiles::tlog::Hash(hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
        .collect()
}

fn index(n: u64) -> String {
    let mut text = format!("{:03}", n % 1000);
    let mut rest = n / 1000;
    while rest > 0 {
        text = format!("x{:03}/{text}", rest % 1000);
        rest /= 1000;
    }
    text
}

/// Decodes an entry bundle into its entries.
fn entries(mut bundle: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bundle.is_empty() {
        let len = u16::from_be_bytes([bundle[0], bundle[1]]) as usize;
        out.push(bundle[2..2 + len].to_vec());
        bundle = &bundle[2 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_tiles_are_the_stored_tree_and_rebuild_the_checkpoint_root() {
    let log = log(600, ServerConfig::default()).await;
    let size = log.checkpoint_size();
    assert!((512..768).contains(&size), "{size}");
    let tree = log.engine.log().tree().clone();
    let (full, width) = (size / 256, size % 256);

    // Level 0: the leaf hashes of the events, 256 to a full tile, then the partial one.
    let mut leaves = Vec::new();
    for n in 0..full {
        let tile = hashes(&log.tile(&format!("0/{}", index(n))).await);
        assert_eq!(tile.len(), 256);
        leaves.extend(tile);
    }
    let partial = hashes(&log.tile(&format!("0/{}.p/{width}", index(full))).await);
    assert_eq!(partial.len() as u64, width);
    leaves.extend(partial);
    for (seq, leaf) in leaves.iter().enumerate() {
        assert_eq!(*leaf, TREE.leaf(&log.engine.log().raw(seq as u64).unwrap()), "leaf {seq}");
    }
    assert_eq!(TREE.root_from_leaves(&leaves), log.engine.log().latest_checkpoint().unwrap().root);

    // Level 1: the roots of the full level-0 tiles (tree level 8), a partial tile of `full`.
    let level1 = hashes(&log.tile(&format!("1/000.p/{full}")).await);
    assert_eq!(level1.len() as u64, full);
    for (n, hash) in level1.iter().enumerate() {
        assert_eq!(*hash, tree.node(8, n as u64).unwrap());
        assert_eq!(*hash, TREE.root_from_leaves(&leaves[n * 256..(n + 1) * 256]));
    }
    // A client rebuilds the checkpoint's root from the level-1 tile and the partial level-0 one.
    let mut frontier = Frontier::new(TREE);
    for hash in &level1 {
        frontier.push_subtree(8, *hash).unwrap();
    }
    for leaf in &leaves[(full * 256) as usize..] {
        frontier.push(*leaf);
    }
    assert_eq!(frontier.size(), size);
    assert_eq!(frontier.root(), log.engine.log().latest_checkpoint().unwrap().root);

    // Level 2 would hold nodes of 65,536 events: there is none.
    log.get("/tile/2/000.p/1").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    log.get("/tile/63/000.p/1").await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tiles_of_the_checkpointed_tree_are_served_and_partials_only_at_their_width() {
    let log = log(300, ServerConfig::default()).await;
    let size = log.checkpoint_size();
    let (full, width) = (size / 256, size % 256);
    assert_eq!(full, 1);
    // The log grows past the checkpoint: nothing beyond the checkpointed tree is served.
    log.uses(300).await;
    assert!(log.engine.log().len() >= size + 300);
    for path in [
        format!("0/{:03}", full),
        format!("0/{:03}.p/{}", full, width + 1),
        format!("0/{:03}.p/{}", full, width - 1),
        format!("0/{:03}.p/{width}", full + 1),
        format!("0/000.p/{width}"),
        "0/002".to_owned(),
        "1/000".to_owned(),
        "1/000.p/2".to_owned(),
        format!("entries/{:03}", full),
        format!("entries/{:03}.p/{}", full, width + 1),
        "0/x018/x446/x744/x073/x709/x551/615".to_owned(),
    ] {
        let answer = log.get(&format!("/tile/{path}")).await;
        answer.assert_error(StatusCode::NOT_FOUND, "not_found");
        assert!(answer.body["message"].as_str().unwrap().contains(&format!("{size} events")), "{path}");
    }
    assert_eq!(log.tile(&format!("0/{:03}.p/{width}", full)).await.len() as u64, width * 32);
    assert_eq!(log.tile("1/000.p/1").await.len(), 32);

    // The next checkpoint brings its own partial tiles; the old widths are gone.
    let next = log.engine.checkpoint_now().await.unwrap().size;
    assert!(next >= size + 300);
    let tile = hashes(&log.tile("0/001").await);
    assert_eq!(tile[0], TREE.leaf(&log.engine.log().raw(256).unwrap()));
    log.get(&format!("/tile/0/002.p/{width}")).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    log.tile(&format!("0/002.p/{}", next % 256)).await;
    log.tile("1/000.p/2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_bundles_hold_the_stored_events_behind_their_lengths() {
    let log = log(600, ServerConfig::default()).await;
    let size = log.checkpoint_size();
    let (full, width) = (size / 256, size % 256);
    let mut all = Vec::new();
    for n in 0..full {
        let bundle = entries(&log.tile(&format!("entries/{}", index(n))).await);
        assert_eq!(bundle.len(), 256);
        all.extend(bundle);
    }
    all.extend(entries(&log.tile(&format!("entries/{}.p/{width}", index(full))).await));
    assert_eq!(all.len() as u64, size);
    for (seq, entry) in all.iter().enumerate() {
        assert_eq!(*entry, log.engine.log().raw(seq as u64).unwrap(), "entry {seq}");
        assert_eq!(decode_event(entry).unwrap().seq, seq as u64);
        // Each entry hashes to its leaf in the level-0 tile.
        assert_eq!(TREE.leaf(entry), log.engine.log().tree().node(0, seq as u64).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_long_for_a_bundle_is_refused_by_name_and_its_hash_tile_still_served() {
    let log = log(0, ServerConfig::default()).await;
    // 256 resources of 256 characters: a created event of more than 65,535 bytes.
    let resources: Vec<String> = (0..256).map(|i| format!("{i:0>256}")).collect();
    let engine = log.engine.clone();
    let seq = tokio::task::spawn_blocking(move || {
        let acme: WorkspaceId = "acme".parse().unwrap();
        engine.create_blocking(Caller::system(), acme, spec("wide", &["read"], resources)).unwrap();
        engine.log().len() - 1
    })
    .await
    .unwrap();
    let len = log.engine.log().raw(seq).unwrap().len();
    assert!(len > 65_535, "{len}");
    let size = log.engine.checkpoint_now().await.unwrap().size;
    let answer = log.get(&format!("/tile/entries/000.p/{size}")).await;
    answer.assert_error(StatusCode::NOT_FOUND, "not_found");
    let message = answer.body["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&format!("event {seq} is {len} bytes")), "{message}");
    assert_eq!(log.tile(&format!("0/000.p/{size}")).await.len() as u64, size * 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_is_the_signed_note_of_the_integrity_api() {
    let log = log(10, ServerConfig::default()).await;
    let answer = log.get("/checkpoint").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
    let note = log.get("/v1/log/checkpoint").await.body["note"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8(answer.bytes).unwrap(), note);
    keyledger_verify::note::open(&note, log.engine.public_key()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_need_an_audit_key_and_entry_bundles_one_over_every_workspace() {
    let log = log(10, ServerConfig::default()).await;
    let width = log.checkpoint_size();
    let hash_tile = format!("/tile/0/000.p/{width}");
    let bundle = format!("/tile/entries/000.p/{width}");
    let keys_only = log.admin_key(&["ledger:keys:read"], &[]).await;
    let acme_auditor = log.admin_key(&["ledger:audit:read"], &["acme"]).await;
    let auditor = log.admin_key(&["ledger:audit:read"], &[]).await;
    for uri in ["/checkpoint", hash_tile.as_str(), bundle.as_str()] {
        log.get_with(uri, None).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        log.get_with(uri, Some("kl_live_nope")).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        log.get_with(uri, Some(&log.secret)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        log.get_with(uri, Some(&keys_only)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(log.get_with(uri, Some(&auditor)).await.status, StatusCode::OK, "{uri}");
    }
    // A key limited to some workspaces reads hashes (they reveal no event) but no bundle.
    assert_eq!(log.get_with("/checkpoint", Some(&acme_auditor)).await.status, StatusCode::OK);
    assert_eq!(log.get_with(&hash_tile, Some(&acme_auditor)).await.status, StatusCode::OK);
    let refused = log.get_with(&bundle, Some(&acme_auditor)).await;
    refused.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(refused.body["message"].as_str().unwrap().contains("every workspace"));
    // Authentication comes before the path: a stranger learns nothing from a bad one.
    log.get_with("/tile/0/0000", None).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_log_serves_checkpoint_and_hash_tiles_without_a_key_but_never_entries() {
    let log = log(10, ServerConfig { public_log: true, ..ServerConfig::default() }).await;
    let width = log.checkpoint_size();
    let checkpoint = log.get_with("/checkpoint", None).await;
    assert_eq!(checkpoint.status, StatusCode::OK);
    assert_eq!(checkpoint.header("cache-control"), "public, max-age=5");
    let tile = log.get_with(&format!("/tile/0/000.p/{width}"), None).await;
    assert_eq!(tile.status, StatusCode::OK);
    assert_eq!(tile.header("cache-control"), "public, max-age=5");
    let bundle = format!("/tile/entries/000.p/{width}");
    log.get_with(&bundle, None).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let acme_auditor = log.admin_key(&["ledger:audit:read"], &["acme"]).await;
    log.get_with(&bundle, Some(&acme_auditor)).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let served = log.get(&bundle).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.header("cache-control"), "private, max-age=5");
    log.get_with("/tile/0/001", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tiles_are_immutable_partial_ones_and_the_checkpoint_short_lived() {
    let log = log(300, ServerConfig::default()).await;
    let width = log.checkpoint_size() % 256;
    let immutable = "private, max-age=31536000, immutable";
    let short = "private, max-age=5";
    for (uri, cache, content_type) in [
        ("/tile/0/000".to_owned(), immutable, "application/octet-stream"),
        ("/tile/entries/000".to_owned(), immutable, "application/octet-stream"),
        (format!("/tile/0/001.p/{width}"), short, "application/octet-stream"),
        (format!("/tile/entries/001.p/{width}"), short, "application/octet-stream"),
        ("/tile/1/000.p/1".to_owned(), short, "application/octet-stream"),
        ("/checkpoint".to_owned(), short, "text/plain; charset=utf-8"),
    ] {
        let answer = log.get(&uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.header("cache-control"), cache, "{uri}");
        assert_eq!(answer.header("content-type"), content_type, "{uri}");
    }
    // Errors are not cached as tiles.
    let missing = log.get("/tile/0/009").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.header("cache-control").contains("immutable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tile_paths_are_refused_naming_the_rule() {
    let log = log(10, ServerConfig::default()).await;
    for path in [
        "00/000",
        "64/000",
        "0/0",
        "0/x000/000",
        "0/x001",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/01",
        "0/000.p",
        "0/%30%30%30",
        "data/000",
        "entries/000.p/1/",
        "0/x018/x446/x744/x073/x709/x551/616",
    ] {
        let answer = log.get(&format!("/tile/{path}")).await;
        answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(answer.body["message"].as_str().unwrap().contains("tile path"), "{path}");
    }
    log.get("/tile/").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    log.get("/tiles/0/000").await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// The independent `tlog_tiles` client mirrors the log over the tile API and computes the
/// tree hash itself, checking every tile against the checkpoint's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlog_tiles_client_mirrors_the_log() {
    use tlog_tiles::tile::{Tile, TileHashReader, TileReader};
    use tlog_tiles::tlog::{record_hash, tree_hash};

    struct Mirror(HashMap<String, Vec<u8>>);
    impl TileReader for Mirror {
        fn height(&self) -> u8 {
            8
        }
        fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::tlog::Error> {
            tiles
                .iter()
                .map(|tile| {
                    let ours = tile.path().replacen("tile/8/", "", 1);
                    self.0.get(&ours).cloned().ok_or(tlog_tiles::tlog::Error::InvalidTile)
                })
                .collect()
        }
        fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
    }

    let log = log(700, ServerConfig::default()).await;
    let checkpoint = log.engine.log().latest_checkpoint().unwrap();
    let size = checkpoint.size;
    // Every hash tile of the tree, fetched the way a mirror fetches them.
    let mut mirror = HashMap::new();
    for level in 0u8..8 {
        let nodes = size >> (8 * u32::from(level));
        for n in 0..nodes.div_ceil(256) {
            let width = (nodes - n * 256).min(256);
            let path = if width == 256 {
                format!("{level}/{}", index(n))
            } else {
                format!("{level}/{}.p/{width}", index(n))
            };
            mirror.insert(path.clone(), log.tile(&path).await);
        }
    }
    let mirror = Mirror(mirror);
    // The checkpoint, as a stranger reads it: a C2SP signed note that Cloudflare's
    // signed_note verifies under the log's published key, with a C2SP tlog-checkpoint body
    // that tlog_tiles parses.
    let served = log.get("/checkpoint").await;
    assert_eq!(served.status, StatusCode::OK);
    let note = signed_note::Note::from_bytes(&served.bytes).unwrap();
    let vkey = log.engine.public_key().to_string();
    let verifier = signed_note::StandardVerifier::new(&vkey).unwrap();
    let (verified, _) = note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)])).unwrap();
    assert_eq!(verified.len(), 1);
    let body = tlog_tiles::checkpoint::Checkpoint::from_bytes(note.text()).unwrap();
    assert_eq!((body.size(), body.hash().0), (size, checkpoint.root));
    let root = *body.hash();
    // The mirrored tiles give the signed root.
    let reader = TileHashReader::new(size, root, &mirror);
    assert_eq!(tree_hash(size, &reader).unwrap(), root);
    // The server's inclusion and consistency proofs check with tlog_tiles against that root
    // (and the older root it computes itself from the tiles).
    for seq in [0, 1, 255, 256, size / 2, size - 1] {
        let n = seq / 256;
        let width = (size - n * 256).min(256);
        let path = if width == 256 {
            format!("entries/{}", index(n))
        } else {
            format!("entries/{}.p/{width}", index(n))
        };
        let entry = entries(&log.tile(&path).await).swap_remove((seq % 256) as usize);
        let answer = log.get(&format!("/v1/log/proofs/inclusion?seq={seq}&size={size}")).await;
        let proof = proof_hashes(&answer);
        tlog_tiles::tlog::check_record(&proof, size, root, seq, record_hash(&entry))
            .unwrap_or_else(|e| panic!("inclusion of {seq}: {e:?}"));
    }
    for old in [1, 7, 256, 300, size - 1] {
        let old_root = tree_hash(old, &reader).unwrap();
        let answer = log.get(&format!("/v1/log/proofs/consistency?from={old}&to={size}")).await;
        let proof = proof_hashes(&answer);
        tlog_tiles::tlog::check_tree(&proof, size, root, old, old_root)
            .unwrap_or_else(|e| panic!("consistency {old} → {size}: {e:?}"));
    }
    // Every entry hashes, by tlog_tiles's own record hash, to its leaf in the level-0 tiles.
    let bundle = entries(&log.tile("entries/000").await);
    let leaves = hashes(&mirror.0["0/000"]);
    for (entry, leaf) in bundle.iter().zip(&leaves) {
        assert_eq!(record_hash(entry).0, *leaf);
    }
}
