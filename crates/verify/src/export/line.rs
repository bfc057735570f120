//! The encoding of export lines and of the manifest line (docs/export-format.md, sections
//! 3 and 4), shared by the producer (`keyledger-ledger`'s export) and the verifier.
//!
//! [`line_value`] defines an event line; [`write_event_line`] writes the same text straight
//! into a buffer, byte for byte (a test compares the two on every event kind and on
//! arbitrary text), so that neither the producer nor the verifier builds a
//! `serde_json::Value` per line. [`LinesHasher`] computes `lines_hash` in large blocks.

use super::MANIFEST_SIGNATURE_CONTEXT;
use super::canonical::{canonical_json, needs_escape, write_json_str};
use crate::merkle::{Hash, TreeHash};
use crate::note::NoteSigner;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyledger_core::json::{actor_text, event_json, limit_spends_json, metadata_json, policy_json};
use keyledger_core::{Actor, Event, Payload, Timestamp, UsageContext};
use serde_json::{Map, Value};

/// The value of an export line for `event` stored as `raw`, with an inclusion proof in a
/// filtered export, in a log whose tree hashes with `hash` (the line's `leaf_hash` is
/// `hash.leaf(raw)`). This is the definition; [`write_event_line`] writes the same text
/// faster.
pub fn line_value(event: &Event, raw: &[u8], inclusion_proof: Option<&[Hash]>, hash: TreeHash) -> Value {
    let mut value = event_json(event);
    if let Value::Object(object) = &mut value {
        object.insert("raw".into(), Value::String(STANDARD.encode(raw)));
        object.insert("leaf_hash".into(), Value::String(hex::encode(hash.leaf(raw))));
        if let Some(proof) = inclusion_proof {
            object.insert("inclusion_proof".into(), hashes_json(proof));
        }
    }
    value
}

/// A member value for [`write_object`], borrowed where it can be.
enum Member<'a> {
    Null,
    Bool(bool),
    U64(u64),
    Str(&'a str),
    String(String),
    /// Shown with `Display` (ids, addresses, timestamps), then escaped if it needs it.
    Display(&'a dyn std::fmt::Display),
    OptStr(Option<&'a str>),
    Strs(&'a [String]),
    /// Already canonical JSON text.
    Json(String),
    Hashes(&'a [Hash]),
    Base64(&'a [u8]),
    Hex(&'a [u8; 32]),
}

/// Appends the canonical JSON object of `members` (keys unique) to `out`: keys sorted by
/// their bytes, each value written as `serde_json` would write its `Value`.
fn write_object(members: &mut [(&str, Member<'_>)], out: &mut String) {
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(key, out);
        out.push(':');
        match member {
            Member::Null | Member::OptStr(None) => out.push_str("null"),
            Member::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Member::U64(n) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{n}");
            }
            Member::Str(s) | Member::OptStr(Some(s)) => write_json_str(s, out),
            Member::String(s) => write_json_str(s, out),
            Member::Display(value) => {
                use std::fmt::Write as _;
                let start = out.len();
                let _ = write!(out, "\"{value}\"");
                if out.as_bytes()[start + 1..out.len() - 1].iter().any(|&b| needs_escape(b)) {
                    let text = out[start + 1..out.len() - 1].to_owned();
                    out.truncate(start);
                    write_json_str(&text, out);
                }
            }
            Member::Strs(items) => {
                out.push('[');
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_json_str(item, out);
                }
                out.push(']');
            }
            Member::Json(text) => out.push_str(text),
            Member::Hashes(hashes) => {
                out.push('[');
                for (j, hash) in hashes.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_hex(hash, out);
                }
                out.push(']');
            }
            Member::Base64(bytes) => {
                // Base64 needs no escaping.
                out.push('"');
                STANDARD.encode_string(bytes, out);
                out.push('"');
            }
            Member::Hex(hash) => push_hex(hash, out),
        }
    }
    out.push('}');
}

fn push_hex(hash: &[u8; 32], out: &mut String) {
    let mut digits = [0u8; 64];
    // 64 is exactly twice 32: this cannot fail.
    let _ = hex::encode_to_slice(hash, &mut digits);
    out.push('"');
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    out.push('"');
}

fn opt_display<T: std::fmt::Display>(value: &Option<T>) -> Member<'_> {
    value.as_ref().map_or(Member::Null, |v| Member::Display(v))
}

fn opt_time(value: Option<Timestamp>) -> Member<'static> {
    value.map_or(Member::Null, |t| Member::String(t.to_rfc3339()))
}

fn context_text(context: &UsageContext) -> String {
    let mut out = String::with_capacity(160);
    write_object(
        &mut [
            ("ip", opt_display(&context.ip)),
            ("user_agent", Member::OptStr(context.user_agent.as_deref())),
            ("method", Member::OptStr(context.method.as_deref())),
            ("path", Member::OptStr(context.path.as_deref())),
            ("request_id", Member::OptStr(context.request_id.as_deref())),
            ("scopes", Member::Strs(&context.scopes)),
            ("resource", Member::OptStr(context.resource.as_deref())),
        ],
        &mut out,
    );
    out
}

fn value_text(value: &Value) -> String {
    canonical_json(value)
}

/// Appends the export line of `event` stored as `raw` (without its `\n`) to `out`: exactly
/// `canonical_json(&line_value(event, raw, inclusion_proof, hash))`, without building the
/// `Value` (the export's hot path, in the producer and the verifier). The member mapping
/// mirrors [`keyledger_core::json::event_json`]; a test compares the two on every kind.
///
/// Returns the leaf hash of `raw` (the line's `leaf_hash`).
pub fn write_event_line(
    event: &Event,
    raw: &[u8],
    inclusion_proof: Option<&[Hash]>,
    hash: TreeHash,
    out: &mut String,
) -> Hash {
    let payload = &event.payload;
    let leaf = hash.leaf(raw);
    let key_id = payload.key_id();
    let mut members: Vec<(&str, Member<'_>)> = Vec::with_capacity(20);
    members.extend([
        ("seq", Member::U64(event.seq)),
        ("at", Member::String(event.at.to_rfc3339())),
        ("kind", Member::Str(payload.kind().as_str())),
        ("workspace", Member::Str(payload.workspace().as_str())),
        ("key_id", opt_display(&key_id)),
        ("actor", actor_member(&event.actor)),
        ("request_id", Member::Display(&event.request_id)),
        ("raw", Member::Base64(raw)),
        ("leaf_hash", Member::Hex(&leaf)),
    ]);
    if let Some(proof) = inclusion_proof {
        members.push(("inclusion_proof", Member::Hashes(proof)));
    }
    match payload {
        Payload::Created(e) => members.extend([
            ("name", Member::Str(&e.name)),
            ("hint", Member::Str(&e.hint)),
            ("environment", Member::Str(e.environment.as_str())),
            ("scopes", Member::Strs(&e.scopes)),
            ("resources", Member::Strs(&e.resources)),
            ("owner", Member::OptStr(e.owner.as_deref())),
            ("metadata", Member::Json(value_text(&metadata_json(&e.metadata)))),
            ("expires_at", opt_time(e.expires_at)),
            ("rotated_from", opt_display(&e.rotated_from)),
        ]),
        Payload::Used(e) => members.push(("context", Member::Json(context_text(&e.context)))),
        Payload::Metered(e) => members.extend([
            ("context", Member::Json(context_text(&e.usage.context))),
            ("cost", Member::U64(e.cost)),
            ("credits_remaining", Member::U64(e.remaining)),
        ]),
        Payload::Counted(e) => {
            members.push(("context", Member::Json(context_text(&e.usage.context))));
            if let Some(credits) = e.credits {
                members.extend([
                    ("cost", Member::U64(credits.cost)),
                    ("credits_remaining", Member::U64(credits.remaining)),
                ]);
            }
            members.push(("ratelimits_spent", Member::Json(value_text(&limit_spends_json(&e.spent)))));
        }
        Payload::CreditsRefilled(e) => members.push(("remaining", Member::U64(e.remaining))),
        Payload::CreditsSet(e) => members.extend([
            ("remaining", Member::U64(e.remaining)),
            ("refill", Member::Json(value_text(&keyledger_core::credits::refill_json(e.refill.as_ref())))),
            ("low_threshold", Member::U64(e.low_threshold)),
        ]),
        Payload::Denied(e) => members.extend([
            ("reason", Member::Str(e.reason.code())),
            ("detail", Member::String(e.reason.message())),
            ("context", Member::Json(context_text(&e.context))),
        ]),
        Payload::Rotated(e) => members.extend([
            ("rotated_to", Member::Display(&e.rotated_to)),
            ("valid_until", opt_time(e.valid_until)),
        ]),
        Payload::Revoked(e) => members.push(("reason", Member::OptStr(e.reason.as_deref()))),
        Payload::Disabled(e) => members.push(("reason", Member::OptStr(e.reason.as_deref()))),
        Payload::Expired(_) | Payload::Enabled(_) => {}
        Payload::PolicySet(e) => {
            members.push(("policy", Member::Json(value_text(&policy_json(&e.policy)))));
        }
        Payload::Lookup(e) => members.push(("found", opt_display(&e.found))),
        Payload::WebhookSet(e) => members.extend([
            ("url", Member::Str(&e.url)),
            ("events", Member::Strs(&e.events)),
            ("enabled", Member::Bool(e.enabled)),
        ]),
        // Its members depend on whether it is about a key or a workspace: through the
        // `Value` of record.
        Payload::SourcesSet(_) => {
            let value = event_json(event);
            for name in ["sources", "from_policy", "require_on_live"] {
                if let Some(member) = value.get(name) {
                    members.push((name, Member::Json(value_text(member))));
                }
            }
        }
        Payload::LeakReported(e) => members.extend([
            ("reporter", Member::Str(e.reporter.as_str())),
            ("url", Member::OptStr(e.url.as_deref())),
            ("source", Member::OptStr(e.source.as_deref())),
        ]),
        Payload::LeakPolicySet(e) => members.push(("on_leak", Member::Str(e.on_leak.as_str()))),
        // Never the foreign digest (docs/import.md).
        Payload::KeyImported(e) => members.extend([
            ("name", Member::Str(&e.name)),
            ("algorithm", Member::Str(e.foreign.algorithm.as_str())),
            ("environment", Member::Str(e.environment.as_str())),
            ("scopes", Member::Strs(&e.scopes)),
            ("resources", Member::Strs(&e.resources)),
            ("owner", Member::OptStr(e.owner.as_deref())),
            ("metadata", Member::Json(value_text(&metadata_json(&e.metadata)))),
            ("expires_at", opt_time(e.expires_at)),
            ("external_id", Member::OptStr(e.external_id.as_deref())),
        ]),
        Payload::KeyRehashed(_) => {}
        // Rare kinds with nested or optional members: through the `Value` of record.
        Payload::Idempotency(_) | Payload::Updated(_) | Payload::RateLimitsSet(_) => {
            let value = event_json(event);
            let nested = match payload {
                Payload::Idempotency(_) => "key_ids",
                Payload::RateLimitsSet(_) => "ratelimits",
                _ => "changes",
            };
            let text = value.get(nested).map(value_text).unwrap_or_default();
            members.push((nested, Member::Json(text)));
        }
    }
    write_object(&mut members, out);
    leaf
}

/// [`actor_text`] as a member.
fn actor_member(actor: &Actor) -> Member<'_> {
    match actor {
        Actor::System | Actor::Verifier | Actor::Recovery => Member::String(actor_text(actor)),
        Actor::Admin(key) => Member::Display(key),
    }
}

/// A list of hashes as a JSON array of lowercase hex strings.
pub fn hashes_json(hashes: &[Hash]) -> Value {
    Value::Array(hashes.iter().map(|h| Value::String(hex::encode(h))).collect())
}

/// The bytes the manifest signature covers: [`MANIFEST_SIGNATURE_CONTEXT`] ‖ the canonical
/// JSON of the manifest object without its `signature` member.
pub fn manifest_message(manifest: &Map<String, Value>) -> Vec<u8> {
    let mut unsigned = manifest.clone();
    unsigned.remove("signature");
    let mut message = MANIFEST_SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(canonical_json(&Value::Object(unsigned)).as_bytes());
    message
}

/// Signs a manifest in place (sets `signature`) with the log's Ed25519 key, over
/// [`manifest_message`].
pub fn sign_manifest(manifest: &mut Map<String, Value>, signer: &NoteSigner) {
    let signature = signer.sign_raw(&manifest_message(manifest));
    manifest.insert("signature".into(), Value::String(STANDARD.encode(signature.to_bytes())));
}

/// The manifest line (without its newline) of a signed manifest object.
pub fn manifest_line(manifest: Map<String, Value>) -> String {
    let mut wrapper = Map::new();
    wrapper.insert("manifest".into(), Value::Object(manifest));
    canonical_json(&Value::Object(wrapper))
}

/// BLAKE3 of the export's event lines (`lines_hash`), fed in large blocks: the same hash
/// as updating line by line, but BLAKE3 hashes a long input several chunks at a time
/// (SIMD) where short updates go one 64-byte block after another.
#[derive(Default)]
pub struct LinesHasher {
    hasher: blake3::Hasher,
    pending: Vec<u8>,
}

impl LinesHasher {
    const BLOCK: usize = 64 << 10;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > Self::BLOCK && !self.pending.is_empty() {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() >= Self::BLOCK {
            self.hasher.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    pub fn finalize(&self) -> Hash {
        let mut hasher = self.hasher.clone();
        hasher.update(&self.pending);
        *hasher.finalize().as_bytes()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::Hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| TreeHash::Rfc6962.leaf(&i.to_be_bytes())).collect()
    }

    /// One event of every kind, free-text members set to `text`.
    fn every_kind(text: &str) -> Vec<Event> {
        use keyledger_core::*;
        let key = |n: u8| KeyId::from_bytes([n; 16]);
        let ws: WorkspaceId = "acme".parse().unwrap();
        let context = UsageContext {
            ip: Some("2001:db8::7".parse().unwrap()),
            user_agent: Some(text.into()),
            method: Some("GET".into()),
            path: Some(format!("/v1/{text}")),
            request_id: Some(text.into()),
            scopes: vec![text.into(), "read".into()],
            resource: Some(text.into()),
        };
        let metadata = serde_json::json!({"z": text, "a": [1, null, {"k": text}]}).to_string();
        let payloads = vec![
            Payload::Created(Created {
                key_id: key(1),
                workspace: ws.clone(),
                name: text.into(),
                hash: KeyHash([0xab; 32]),
                hint: "kl_live_…abcd".into(),
                prefix: "kl".parse().unwrap(),
                environment: Environment::Test,
                scopes: vec![text.into()],
                resources: vec![],
                owner: Some(text.into()),
                metadata: metadata.clone(),
                expires_at: Some(Timestamp(1)),
                rotated_from: Some(key(3)),
            }),
            Payload::Used(Usage { key_id: key(1), workspace: ws.clone(), context: context.clone() }),
            Payload::Used(Usage { key_id: key(1), workspace: ws.clone(), context: UsageContext::default() }),
            Payload::Metered(keyledger_core::Metered {
                usage: Usage { key_id: key(1), workspace: ws.clone(), context: context.clone() },
                cost: 3,
                remaining: u64::MAX,
            }),
            Payload::Counted(keyledger_core::Counted {
                usage: Usage { key_id: key(1), workspace: ws.clone(), context: context.clone() },
                credits: Some(keyledger_core::CreditSpend { cost: 0, remaining: 4 }),
                spent: vec![
                    keyledger_core::LimitSpend { name: "api".into(), cost: 1, duration: 1_000_000 },
                    keyledger_core::LimitSpend {
                        name: text.into(),
                        cost: u64::MAX,
                        duration: 2_592_000_000_000,
                    },
                ],
            }),
            Payload::Counted(keyledger_core::Counted {
                usage: Usage { key_id: key(1), workspace: ws.clone(), context: UsageContext::default() },
                credits: None,
                spent: vec![keyledger_core::LimitSpend { name: "api".into(), cost: 2, duration: 90_000_000 }],
            }),
            Payload::CreditsSet(keyledger_core::CreditsSet {
                key_id: key(1),
                workspace: ws.clone(),
                remaining: 0,
                refill: Some(keyledger_core::Refill {
                    amount: 9,
                    interval: keyledger_core::RefillInterval::Monthly,
                    day: None,
                }),
                low_threshold: 1,
            }),
            Payload::CreditsSet(keyledger_core::CreditsSet {
                key_id: key(1),
                workspace: ws.clone(),
                remaining: 5,
                refill: None,
                low_threshold: 0,
            }),
            Payload::CreditsRefilled(keyledger_core::CreditsRefilled {
                key_id: key(1),
                workspace: ws.clone(),
                remaining: 9,
            }),
            Payload::Denied(Denial {
                key_id: key(1),
                workspace: ws.clone(),
                reason: DenyReason::UsageExceeded,
                context: UsageContext::default(),
            }),
            Payload::Denied(Denial {
                key_id: key(1),
                workspace: ws.clone(),
                reason: DenyReason::MissingScope(text.into()),
                context,
            }),
            Payload::Rotated(Rotated {
                key_id: key(1),
                workspace: ws.clone(),
                rotated_to: key(2),
                valid_until: Some(Timestamp(-5)),
            }),
            Payload::Revoked(Revoked { key_id: key(1), workspace: ws.clone(), reason: Some(text.into()) }),
            Payload::Revoked(Revoked { key_id: key(1), workspace: ws.clone(), reason: None }),
            Payload::Expired(KeyRef { key_id: key(1), workspace: ws.clone() }),
            Payload::PolicySet(PolicySet {
                workspace: ws.clone(),
                policy: Policy {
                    max_active_keys: Some(1),
                    require_expiry: true,
                    max_lifetime: Some(60_000_000),
                    key_prefix: Some("ac".parse().unwrap()),
                },
            }),
            Payload::Updated(Updated {
                key_id: key(1),
                workspace: ws.clone(),
                name: Some(text.into()),
                owner: Some(None),
                metadata: Some(metadata),
                expires_at: Some(Some(Timestamp(7))),
                scopes: Some(vec![text.into()]),
                resources: None,
            }),
            Payload::Disabled(Disabled { key_id: key(1), workspace: ws.clone(), reason: Some(text.into()) }),
            Payload::Enabled(KeyRef { key_id: key(1), workspace: ws.clone() }),
            Payload::Lookup(Lookup { workspace: ws.clone(), found: Some(key(1)) }),
            Payload::Lookup(Lookup { workspace: ws.clone(), found: None }),
            Payload::Idempotency(IdempotencyRecord {
                id: [0x11; 32],
                fingerprint: [0x22; 32],
                workspace: ws.clone(),
                key_ids: vec![key(1), key(2)],
            }),
            Payload::WebhookSet(WebhookSet {
                workspace: ws.clone(),
                url: format!("https://h/{text}"),
                events: vec![text.into()],
                enabled: false,
            }),
            Payload::SourcesSet(keyledger_core::SourcesSet {
                workspace: ws.clone(),
                key_id: Some(key(1)),
                sources: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
                from_policy: true,
                require_on_live: false,
            }),
            Payload::SourcesSet(keyledger_core::SourcesSet {
                workspace: ws,
                key_id: None,
                sources: vec![],
                from_policy: false,
                require_on_live: true,
            }),
        ];
        let actors = [Actor::System, Actor::Verifier, Actor::Admin(key(9)), Actor::Recovery];
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Event {
                seq: 300 + i as u64,
                at: Timestamp(1_700_000_000_123_456 + i as i64),
                actor: actors[i % actors.len()].clone(),
                request_id: RequestId::from_bytes([7; 16]),
                payload,
            })
            .collect()
    }

    fn assert_fast_line_is_the_definition(text: &str) {
        let proof = leaves(3);
        for event in every_kind(text) {
            let raw = keyledger_core::encode_event(&event);
            for inclusion_proof in [None, Some(&proof[..])] {
                for hash in [TreeHash::Rfc6962, TreeHash::Blake3] {
                    let mut line = String::from("kept ");
                    let leaf = write_event_line(&event, &raw, inclusion_proof, hash, &mut line);
                    let expected = canonical_json(&line_value(&event, &raw, inclusion_proof, hash));
                    assert_eq!(
                        line.strip_prefix("kept "),
                        Some(expected.as_str()),
                        "{:?}",
                        event.payload.kind()
                    );
                    assert_eq!(leaf, hash.leaf(&raw));
                    assert!(line.contains(&format!("\"leaf_hash\":\"{}\"", hex::encode(leaf))));
                }
            }
        }
    }

    #[test]
    fn write_event_line_is_the_canonical_json_of_line_value() {
        assert_fast_line_is_the_definition("plain");
        assert_fast_line_is_the_definition("");
        assert_fast_line_is_the_definition("q\"b\\s/\u{8}\t\n\u{c}\r\u{0}\u{1f}\u{7f}é—😀 \u{2028}");
    }

    #[test]
    fn lines_hash_does_not_depend_on_how_lines_are_fed() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = LinesHasher::new();
        for piece in data.chunks(613).chain([&data[..0]]) {
            hasher.update(piece);
        }
        hasher.update(&data[..100_000]);
        let mut whole = data.clone();
        whole.extend_from_slice(&data[..100_000]);
        assert_eq!(hasher.finalize(), *blake3::hash(&whole).as_bytes());
        assert_eq!(LinesHasher::new().finalize(), *blake3::hash(b"").as_bytes());
    }

    proptest::proptest! {
        #[test]
        fn write_event_line_matches_the_definition_on_any_text(text in "\\PC*|[\\x00-\\x7f]{0,40}") {
            assert_fast_line_is_the_definition(&text);
        }
    }
}
