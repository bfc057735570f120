//! The fold's figures on a small hand-made history, and the signed form: round trip,
//! tampering, the HTML embedding, and recomputation from the events' bytes.

use super::*;
use crate::merkle::TreeHash;
use crate::note::{Checkpoint, NoteSigner, sign_checkpoint};
use keyledger_core::{
    Actor, Created, Denial, DenyReason, Environment, Event, KeyHash, KeyId, KeyPrefix, Payload, Policy,
    PolicySet, RequestId, Revoked, Rotated, Timestamp, Usage, UsageContext, WorkspaceId, encode_event,
};
use serde_json::{Value, json};

const DAY: i64 = DAY_MICROS;
const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn ws(name: &str) -> WorkspaceId {
    name.parse().unwrap()
}

fn key(n: u8) -> KeyId {
    KeyId::from_bytes([n; 16])
}

struct History {
    events: Vec<Event>,
    admin: KeyId,
}

impl History {
    fn new() -> Self {
        Self { events: Vec::new(), admin: key(99) }
    }

    fn push(&mut self, at: i64, actor: Actor, payload: Payload) {
        let seq = self.events.len() as u64;
        let request_id = RequestId::from_bytes([u8::try_from(seq % 100).unwrap() + 1; 16]);
        self.events.push(Event { seq, at: Timestamp(at), actor, request_id, payload });
    }

    fn create(
        &mut self,
        at: i64,
        id: KeyId,
        workspace: &str,
        expires_at: Option<i64>,
        rotated_from: Option<KeyId>,
    ) {
        let admin = Actor::Admin(self.admin);
        self.push(
            at,
            admin,
            Payload::Created(Created {
                key_id: id,
                workspace: ws(workspace),
                name: format!("key </script> {}", id),
                hash: KeyHash([0; 32]),
                hint: "abcd".into(),
                prefix: KeyPrefix::default_prefix(),
                environment: Environment::Live,
                scopes: vec!["read".into()],
                resources: vec![],
                owner: Some("team-a".into()),
                metadata: "{}".into(),
                expires_at: expires_at.map(Timestamp),
                rotated_from,
            }),
        );
    }

    fn used(&mut self, at: i64, id: KeyId, workspace: &str) {
        let context = UsageContext { ip: Some("203.0.113.9".parse().unwrap()), ..Default::default() };
        self.push(
            at,
            Actor::Verifier,
            Payload::Used(Usage { key_id: id, workspace: ws(workspace), context }),
        );
    }

    fn denied(&mut self, at: i64, id: KeyId, workspace: &str, reason: DenyReason) {
        self.push(
            at,
            Actor::Verifier,
            Payload::Denied(Denial {
                key_id: id,
                workspace: ws(workspace),
                reason,
                context: UsageContext::default(),
            }),
        );
    }
}

/// A quarter of `acme` (and noise in `beta`): k1 used on day 2 and 95 days before the end
/// → unused; k2 never used, no expiry; k3 rotated late into k4, then k3 revoked and
/// presented twice; policy max lifetime 30 days.
fn quarter() -> (History, Parameters) {
    let mut h = History::new();
    let admin = Actor::Admin(h.admin);
    h.push(
        T0 - 50 * DAY,
        admin.clone(),
        Payload::PolicySet(PolicySet {
            workspace: ws("acme"),
            policy: Policy { max_lifetime: Some(30 * DAY), ..Policy::default() },
        }),
    );
    h.create(T0 - 40 * DAY, key(1), "acme", Some(T0 + 200 * DAY), None);
    h.create(T0 - 40 * DAY, key(3), "acme", Some(T0 + 200 * DAY), None);
    h.create(T0 - 39 * DAY, key(9), "beta", None, None);
    h.used(T0 - 39 * DAY, key(9), "beta");
    h.used(T0 + DAY, key(1), "acme");
    h.used(T0 + DAY + 5, key(1), "acme");
    h.create(T0 + 2 * DAY, key(2), "acme", None, None);
    h.create(T0 + 3 * DAY, key(4), "acme", Some(T0 + 100 * DAY), Some(key(3)));
    h.push(
        T0 + 3 * DAY,
        admin.clone(),
        Payload::Rotated(Rotated {
            key_id: key(3),
            workspace: ws("acme"),
            rotated_to: key(4),
            valid_until: None,
        }),
    );
    h.push(
        T0 + 3 * DAY,
        admin,
        Payload::Revoked(Revoked { key_id: key(3), workspace: ws("acme"), reason: Some("rotated".into()) }),
    );
    h.denied(T0 + 4 * DAY, key(3), "acme", DenyReason::Revoked);
    h.denied(T0 + 5 * DAY, key(3), "acme", DenyReason::Revoked);
    h.used(T0 + 80 * DAY, key(4), "acme");
    h.used(T0 + 95 * DAY, key(4), "acme"); // after the period
    let params = Parameters::new(
        Some(vec![ws("acme")]),
        Timestamp(T0),
        Timestamp(T0 + 90 * DAY),
        Timestamp(T0 + 100 * DAY),
        30,
    )
    .unwrap();
    (h, params)
}

fn figures(h: &History, params: &Parameters) -> Value {
    let mut fold = ComplianceFold::new(params.clone());
    for event in &h.events {
        fold.push(event).unwrap();
    }
    fold.finish()
}

#[test]
fn the_fold_answers_the_quarter() {
    let (h, params) = quarter();
    let f = figures(&h, &params);
    let ids: Vec<&str> =
        f["inventory"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [key(1), key(3), key(2), key(4)].map(|k| k.to_string()));
    let inv = |n: u8| {
        f["inventory"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == json!(key(n).to_string()))
            .unwrap()
            .clone()
    };
    assert_eq!(inv(1)["uses_in_period"], json!(2));
    assert_eq!(inv(1)["status"], json!("active"));
    assert_eq!(inv(3)["status"], json!("revoked"));
    assert_eq!(inv(3)["denials_in_period"], json!(2));
    assert_eq!(inv(4)["uses_in_period"], json!(1), "the use after the period is not counted");
    assert_eq!(f["usage"]["used"], json!(3));
    assert_eq!(f["usage"]["denied"], json!(2));
    assert_eq!(f["usage"]["by_day"].as_array().unwrap().len(), 90);
    assert_eq!(f["usage"]["by_day"][1], json!({"day": "2026-01-02", "used": 2, "denied": 0}));
    let counts = &f["exception_counts"];
    assert_eq!(counts["unused"], json!(1), "{f:#}");
    assert_eq!(counts["never_used"], json!(1));
    assert_eq!(counts["no_expiry"], json!(1));
    assert_eq!(counts["rotated_late"], json!(1));
    assert_eq!(counts["used_after_revocation"], json!(1));
    assert_eq!(counts["past_max_lifetime"], json!(3), "k1, k2 and k4 are older than 30 days at the end");
    let after =
        f["exceptions"].as_array().unwrap().iter().find(|e| e["kind"] == "used_after_revocation").unwrap();
    assert_eq!(after["count"], json!(2));
    assert_eq!(f["lifecycle"]["counts"], json!({"created": 2, "revoked": 1, "rotated": 1}));
    assert_eq!(f["admin_activity"][0]["events"], json!(4));
    assert_eq!(f["break_glass"]["count"], json!(0));
    assert!(!f.to_string().contains("beta"), "another workspace leaked into the report");
}

/// A workspace requiring allow-lists on live keys, one key with a list and one without; a
/// leak report on the first, revoked an hour later, and one on the second, never revoked.
#[test]
fn keys_without_a_required_allow_list_and_leak_reports_are_exceptions() {
    let (mut h, params) = quarter();
    let admin = Actor::Admin(h.admin);
    let sources = |key_id: Option<KeyId>, list: &[&str], require_on_live: bool| {
        Payload::SourcesSet(keyledger_core::SourcesSet {
            workspace: ws("acme"),
            key_id,
            sources: list.iter().map(|s| s.parse().unwrap()).collect(),
            from_policy: false,
            require_on_live,
        })
    };
    let at = T0 + 10 * DAY;
    h.push(at, admin.clone(), sources(None, &[], true));
    h.push(at, admin.clone(), sources(Some(key(1)), &["10.0.0.0/8"], false));
    let leak = |key_id: KeyId| {
        Payload::LeakReported(keyledger_core::LeakReported {
            key_id,
            workspace: ws("acme"),
            reporter: keyledger_core::LeakReporter::Github,
            url: Some("https://github.com/x/y".into()),
            source: Some("content".into()),
        })
    };
    h.push(at + DAY, Actor::System, leak(key(1)));
    h.push(
        at + DAY + 3_600_000_000,
        Actor::System,
        Payload::Revoked(Revoked { key_id: key(1), workspace: ws("acme"), reason: Some("leaked".into()) }),
    );
    h.push(at + 2 * DAY, Actor::System, leak(key(2)));
    let f = figures(&h, &params);
    let of_kind = |kind: &str| -> Vec<Value> {
        f["exceptions"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
    };
    let missing: Vec<Value> = of_kind("no_source_allowlist").iter().map(|e| e["key_id"].clone()).collect();
    // key 1 has a list (and is revoked), key 3 was revoked before: keys 2 and 4 lack one.
    assert_eq!(missing, vec![json!(key(2).to_string()), json!(key(4).to_string())], "{f:#}");
    assert_eq!(f["exception_counts"]["no_source_allowlist"], json!(2));
    let leaks = of_kind("leak_reported");
    assert_eq!(leaks.len(), 2);
    let first = leaks.iter().find(|e| e["key_id"] == json!(key(1).to_string())).unwrap();
    assert_eq!(first["seconds_to_revocation"], json!(3600));
    assert_eq!(first["reporter"], json!("github"));
    let second = leaks.iter().find(|e| e["key_id"] == json!(key(2).to_string())).unwrap();
    assert_eq!(second["revoked_at"], Value::Null);
    assert!(second["detail"].as_str().unwrap().contains("not revoked"), "{second}");
}

/// An imported key enters the inventory like an issued one, with its owner, scopes and
/// expiry, and the lifecycle says how it came.
#[test]
fn an_imported_key_is_in_the_inventory_and_the_lifecycle() {
    let (mut h, params) = quarter();
    let admin = Actor::Admin(h.admin);
    h.push(
        T0 + 6 * DAY,
        admin,
        Payload::KeyImported(keyledger_core::KeyImported {
            key_id: key(7),
            workspace: ws("acme"),
            name: "from unkey".into(),
            foreign: keyledger_core::ForeignHash {
                algorithm: keyledger_core::ForeignAlgorithm::Sha256,
                digest: [7; 32],
            },
            environment: Environment::Test,
            scopes: vec!["orders:read".into()],
            resources: vec!["acme".into()],
            owner: Some("team-b".into()),
            metadata: "{}".into(),
            expires_at: Some(Timestamp(T0 + 60 * DAY)),
            external_id: Some("key_123".into()),
        }),
    );
    h.used(T0 + 7 * DAY, key(7), "acme");
    let f = figures(&h, &params);
    let imported = f["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == json!(key(7).to_string()))
        .unwrap_or_else(|| panic!("the imported key is missing: {f:#}"))
        .clone();
    assert_eq!(imported["owner"], json!("team-b"), "{imported}");
    assert_eq!(imported["scopes"], json!(["orders:read"]), "{imported}");
    assert_eq!(imported["uses_in_period"], json!(1), "{imported}");
    assert_eq!(imported["status"], json!("expired"), "expired at day 60 of 90: {imported}");
    let entry = f["lifecycle"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key_id"] == json!(key(7).to_string()))
        .unwrap()
        .clone();
    assert_eq!(entry["kind"], json!("imported"), "{entry}");
    assert_eq!(entry["detail"], json!("imported by its sha256 hash"), "{entry}");
    assert!(!f.to_string().contains(&"07".repeat(32)), "the foreign digest is in the report");
}

#[test]
fn events_out_of_order_are_refused() {
    let (h, params) = quarter();
    let mut fold = ComplianceFold::new(params);
    fold.push(&h.events[3]).unwrap();
    assert!(matches!(fold.push(&h.events[2]), Err(ReportError::Events(_))));
}

#[test]
fn parameters_are_checked_and_round_trip() {
    let t = Timestamp(T0);
    assert!(Parameters::new(None, t, t, t, 90).is_err());
    assert!(Parameters::new(None, t, t.plus_micros(400 * DAY), t, 90).is_err());
    assert!(Parameters::new(None, t, t.plus_micros(DAY), t, 0).is_err());
    assert!(Parameters::new(Some(vec![]), t, t.plus_micros(DAY), t, 90).is_err());
    let p = Parameters::new(
        Some(vec![ws("b"), ws("a"), ws("b")]),
        t,
        t.plus_micros(DAY),
        t.plus_micros(2 * DAY),
        7,
    )
    .unwrap();
    assert_eq!(p.workspaces, Some(vec![ws("a"), ws("b")]));
    assert_eq!(p.as_of, t.plus_micros(DAY));
    assert_eq!(Parameters::from_json(&p.to_json()).unwrap(), p);
    let mut edited = p.to_json();
    edited["workspaces"] = json!(["b", "a"]);
    assert!(Parameters::from_json(&edited).is_err());
}

struct Signed {
    signer: NoteSigner,
    report: serde_json::Map<String, Value>,
}

fn signed(h: &History, params: &Parameters) -> Signed {
    let signer = NoteSigner::new("example.org/log", ed25519_dalek::SigningKey::from_bytes(&[7; 32])).unwrap();
    let leaves: Vec<_> = h.events.iter().map(|e| TreeHash::Rfc6962.leaf(&encode_event(e))).collect();
    let size = leaves.len() as u64;
    let root = TreeHash::Rfc6962.root_from_leaves(&leaves);
    let note = sign_checkpoint(&Checkpoint::new("example.org/log", size, root), &signer).unwrap();
    let anchor = Anchor { size, root, tree_hash: TreeHash::Rfc6962, note };
    let mut report = report_object("example.org/log", params, &anchor, figures(h, params));
    sign_report(&mut report, &signer);
    Signed { signer, report }
}

fn recheck(text: &str, signer: &NoteSigner, h: &History) -> Result<Checked, ReportError> {
    let report = open_report(parse_report_file(text)?, &signer.verifier())?;
    let mut recompute = Recompute::new(&report);
    for event in &h.events {
        recompute.push_raw(&encode_event(event))?;
    }
    recompute.finish()
}

#[test]
fn a_signed_report_verifies_against_its_events_in_json_and_html() {
    let (h, params) = quarter();
    let s = signed(&h, &params);
    let text = report_text(&s.report);
    let checked = recheck(&text, &s.signer, &h).unwrap();
    assert_eq!(checked.coverage, Coverage::CompleteTree);
    let html = format!(
        "<!doctype html><p>x</p>{HTML_EMBED_OPEN}{}{HTML_EMBED_CLOSE}<p>y</p>",
        html_embed(&s.report)
    );
    assert!(!html_embed(&s.report).contains("</script>"), "a key's name ends the script block");
    recheck(&html, &s.signer, &h).unwrap();
}

#[test]
fn any_edited_byte_or_figure_fails() {
    let (h, params) = quarter();
    let s = signed(&h, &params);
    let text = report_text(&s.report);
    // Every byte position (a sample, for time), changed to something else.
    for i in (0..text.len()).step_by(7) {
        let mut bytes = text.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
        let Ok(tampered) = String::from_utf8(bytes) else { continue };
        assert!(recheck(&tampered, &s.signer, &h).is_err(), "byte {i} changed and still verifies");
    }
    // A figure changed and the report re-signed by someone holding the key: the signature
    // holds, the recomputation does not.
    let mut forged = s.report.clone();
    forged["figures"]["usage"]["used"] = json!(4);
    sign_report(&mut forged, &s.signer);
    let error = recheck(&report_text(&forged), &s.signer, &h).unwrap_err();
    assert!(matches!(&error, ReportError::Mismatch { path, .. } if path == "figures.usage.used"), "{error}");
    // The events of another log do not make up the checkpoint's tree.
    let mut other = History::new();
    other.events = h.events.clone();
    other.events.pop();
    other.used(T0 + 96 * DAY, key(1), "acme");
    assert!(matches!(recheck(&text, &s.signer, &other), Err(ReportError::Checkpoint(_))));
    // The log's entries with one moved out of its place (its seq bumped past the tree):
    // read as a filtered export's lines the figures could still match, but as the whole
    // log (entry bundles) they are refused.
    let report = open_report(parse_report_file(&text).unwrap(), &s.signer.verifier()).unwrap();
    let moved = || {
        let mut recompute = Recompute::new(&report);
        for (i, event) in h.events.iter().enumerate() {
            let mut event = event.clone();
            if i == 3 {
                event.seq = u64::MAX - 1;
            }
            recompute.push_raw(&encode_event(&event)).unwrap();
        }
        recompute
    };
    assert_eq!(moved().finish().map(|c| c.coverage), Ok(Coverage::LinesIncluded));
    assert!(matches!(moved().finish_complete(), Err(ReportError::Events(_))));
    // Another key.
    let stranger =
        NoteSigner::new("example.org/log", ed25519_dalek::SigningKey::from_bytes(&[8; 32])).unwrap();
    assert!(matches!(recheck(&text, &stranger, &h), Err(ReportError::Signature(_))));
}

#[test]
fn entry_bundles_split_and_refuse_truncation() {
    let bundle = [0, 2, 9, 9, 0, 0, 0, 1, 5];
    assert_eq!(bundle_entries(&bundle).unwrap(), vec![&[9, 9][..], &[][..], &[5][..]]);
    assert!(bundle_entries(&bundle[..8]).is_err());
    assert!(bundle_entries(&bundle[..1]).is_err());
}

/// `s` with its checkpoint note replaced by `note`, re-signed with the log's key: what
/// whoever holds that key can do, and the witnesses' cosignatures are there to catch.
fn with_note(s: &Signed, note: String) -> Signed {
    let mut report = s.report.clone();
    let mut checkpoint = report["checkpoint"].as_object().unwrap().clone();
    checkpoint.insert("note".into(), Value::String(note));
    report.insert("checkpoint".into(), Value::Object(checkpoint));
    report.remove("signature");
    sign_report(&mut report, &s.signer);
    Signed { signer: s.signer.clone(), report }
}

/// `s` opened as `report verify` opens a report: its signature and checkpoint checked.
fn opened(s: &Signed) -> Result<OpenedReport, ReportError> {
    open_report(parse_report_file(&report_text(&s.report))?, &s.signer.verifier())
}

/// A signed report whose checkpoint note carries the cosignature lines of `cosigners`.
fn cosigned(h: &History, params: &Parameters, cosigners: &[&crate::cosignature::Cosigner]) -> Signed {
    let s = signed(h, params);
    let note = s.report["checkpoint"]["note"].as_str().unwrap().to_owned();
    let text = &note[..note.find("\n\n").unwrap() + 1];
    let lines: String = cosigners.iter().map(|c| c.cosign(text, 1_767_225_600).unwrap()).collect();
    with_note(&s, format!("{note}{lines}"))
}

#[test]
fn a_report_names_the_trusted_witnesses_that_cosigned_its_checkpoint_once_a_quorum_did() {
    use crate::cosignature::{Cosigner, Quorum};
    let witness = |name: &str, seed: u8| {
        Cosigner::new(name, ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap()
    };
    let (a, b, stranger) =
        (witness("witness.example/a", 1), witness("witness.example/b", 2), witness("witness.example/c", 3));
    let (h, params) = quarter();
    let report = opened(&cosigned(&h, &params, &[&a])).unwrap();

    let named = report.cosigned_by(&Quorum::new(vec![a.witness_key(), b.witness_key()], 1).unwrap()).unwrap();
    assert_eq!(named.iter().map(|c| c.witness.name()).collect::<Vec<_>>(), ["witness.example/a"]);
    assert_eq!(named[0].timestamp, 1_767_225_600);
    // Two were asked for, one cosigned; a witness that never cosigned counts for nothing.
    assert!(report.cosigned_by(&Quorum::new(vec![a.witness_key(), b.witness_key()], 2).unwrap()).is_err());
    assert!(report.cosigned_by(&Quorum::new(vec![stranger.witness_key()], 1).unwrap()).is_err());

    // A line in a trusted witness's name over another checkpoint does not count.
    let other = cosigned(&h, &params, &[]);
    let other_note = other.report["checkpoint"]["note"].as_str().unwrap().to_owned();
    let forged_text =
        other_note.replace(&format!("\n{}\n", h.events.len()), &format!("\n{}\n", h.events.len() + 1));
    assert_ne!(forged_text, other_note, "the forged line must be over another size");
    let forged_line = a.cosign(&forged_text[..forged_text.find("\n\n").unwrap() + 1], 1_767_225_600).unwrap();
    let report = opened(&with_note(&other, other_note + &forged_line)).unwrap();
    assert!(report.cosigned_by(&Quorum::new(vec![a.witness_key()], 1).unwrap()).is_err());
}

#[test]
fn a_cosignature_counts_only_under_the_trusted_key_and_only_as_the_witness_signed_it() {
    use crate::cosignature::{Cosigner, Quorum};
    let witness = |name: &str, seed: u8| {
        Cosigner::new(name, ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap()
    };
    let (a, b) = (witness("witness.example/a", 1), witness("witness.example/b", 2));
    // Another key under a's name: its line has another key id, so it is no line of a's.
    let impostor = witness("witness.example/a", 9);
    let (h, params) = quarter();
    let report = opened(&cosigned(&h, &params, &[&impostor, &b])).unwrap();
    let quorum = |witnesses: &[&Cosigner], k| {
        Quorum::new(witnesses.iter().map(|w| w.witness_key()).collect(), k).unwrap()
    };
    let named = report.cosigned_by(&quorum(&[&a, &b], 1)).unwrap();
    assert_eq!(named.iter().map(|c| c.witness.name()).collect::<Vec<_>>(), ["witness.example/b"]);
    let error = report.cosigned_by(&quorum(&[&a], 1)).unwrap_err();
    assert!(matches!(error, ReportError::Checkpoint(_)), "{error}");
    assert!(error.to_string().contains("0 of the 1 trusted witnesses cosigned"), "{error}");

    // a's own line with one character of its signature changed.
    let genuine = cosigned(&h, &params, &[&a, &b]);
    let note = genuine.report["checkpoint"]["note"].as_str().unwrap().to_owned();
    let line_start = note.find("— witness.example/a ").unwrap();
    let at = line_start + note[line_start..].find('\n').unwrap() - 10;
    let changed = if &note[at..=at] == "A" { "B" } else { "A" };
    let tampered_note = format!("{}{changed}{}", &note[..at], &note[at + 1..]);
    assert_ne!(tampered_note, note);
    // Edited in the signed report: the report's signature fails before any cosignature is read.
    let mut edited = genuine.report.clone();
    edited["checkpoint"]["note"] = Value::String(tampered_note.clone());
    assert!(matches!(
        open_report(parse_report_file(&report_text(&edited)).unwrap(), &genuine.signer.verifier()),
        Err(ReportError::Signature(_))
    ));
    // Re-signed by the log's key: the line names a trusted witness and does not verify, which
    // refuses the report whatever the other witnesses said; a verifier not trusting a
    // ignores the line.
    let report = opened(&with_note(&genuine, tampered_note)).unwrap();
    let error = report.cosigned_by(&quorum(&[&a, &b], 1)).unwrap_err();
    assert!(matches!(error, ReportError::Checkpoint(_)), "{error}");
    assert!(error.to_string().contains("invalid cosignature by witness witness.example/a+"), "{error}");
    let named = report.cosigned_by(&quorum(&[&b], 1)).unwrap();
    assert_eq!(named.iter().map(|c| c.witness.name()).collect::<Vec<_>>(), ["witness.example/b"]);
}
