//! Tamper evidence of the data dir, through the real binary (docs/log-format.md; docs/operations.md,
//! "`keyledger log verify`").
//!
//! Each test builds a small ledger with `keyledger serve` (keys created, verified, revoked;
//! a checkpoint every few events), stops it cleanly, damages one thing on disk, and checks
//! that `keyledger log verify` exits non-zero and names the first bad seq where it can.

use keyledger_e2e::frames::{self, COMMIT, Frame};
use keyledger_e2e::{Ledger, copy_dir, find_bytes, keyledger, log_verify, path_str, snapshot};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The name of the key whose projection row case (c) damages.
const TARGET_NAME: &str = "tamper-target-name";

/// A cleanly stopped ledger with some history.
struct Golden {
    ledger: Ledger,
    /// Events in the log.
    events: u64,
}

impl Golden {
    fn build() -> Golden {
        let ledger = Ledger::init();
        // A checkpoint every 4 events, so there are several to damage.
        let server = ledger.serve(&["--checkpoint-every-events", "4", "--usage-durability", "strict"]);
        let client = server.client();
        let admin = &ledger.admin_key;
        let mut secrets = Vec::new();
        for (name, scopes) in
            [(TARGET_NAME, json!(["read"])), ("second", json!(["read", "write"])), ("third", json!([]))]
        {
            let created =
                client.post("/v1/workspaces/acme/keys", admin, &json!({"name": name, "scopes": scopes}));
            assert_eq!(created.status, 201, "{}", created.dump());
            secrets.push((
                created.body["key_id"].as_str().unwrap().to_owned(),
                created.body["secret"].as_str().unwrap().to_owned(),
            ));
        }
        // Enough verifications for more than 32 events, so that the tree stores nodes at
        // levels 4 and 5 (lower levels are not stored).
        for _ in 0..6 {
            for (_, secret) in &secrets {
                for scopes in [json!(["read"]), json!([])] {
                    let verified =
                        client.post("/v1/verify", "unused", &json!({"key": secret, "scopes": scopes}));
                    assert!(verified.status == 200 || verified.status == 403, "{}", verified.dump());
                }
            }
        }
        let revoked = client.post(&format!("/v1/keys/{}/revoke", secrets[2].0), admin, &json!({}));
        assert_eq!(revoked.status, 200, "{}", revoked.dump());
        let health = client.get("/healthz", admin);
        let events = health.body["log_size"]
            .as_u64()
            .unwrap_or_else(|| panic!("healthz lacks log_size: {}", health.dump()));
        server.stop();
        let golden = Golden { ledger, events };
        // Sanity: the untouched ledger verifies, and its log is what the cases below assume.
        let clean = golden.ledger.log_verify();
        assert!(clean.success(), "the untampered log must verify:\n{}\n{}", clean.stdout, clean.stderr);
        assert!(events >= 32, "expected 32 events or more, found {events}");
        let frames = golden.event_frames(&golden.ledger.data_dir);
        assert_eq!(frames.len() as u64, events, "one frame per event");
        for (seq, frame) in frames.iter().enumerate() {
            let event = keyledger_core::decode_event(&frame.record).expect("the clean log decodes");
            assert_eq!(event.seq, seq as u64, "frame {seq} holds event {}", event.seq);
        }
        assert_eq!(frames.last().unwrap().flags & COMMIT, COMMIT, "the last frame carries the commit mark");
        golden
    }

    /// A copy of the data dir, to damage.
    fn copy(&self, case: &str) -> PathBuf {
        let target = self.ledger.tmp.path().join(format!("case-{case}"));
        copy_dir(&self.ledger.data_dir, &target);
        target
    }

    fn event_segment(&self, dir: &Path) -> PathBuf {
        single_segment(&dir.join("log/events"))
    }

    fn event_frames(&self, dir: &Path) -> Vec<Frame> {
        frames::parse(&std::fs::read(self.event_segment(dir)).unwrap())
    }
}

/// The one segment file of a segment log directory (the tests write far less than 64 MiB).
fn single_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 1, "expected one segment in {}: {segments:?}", dir.display());
    assert_eq!(segments[0].file_name().unwrap().to_str().unwrap(), format!("seg-{:020}.log", 0));
    segments.remove(0)
}

/// Runs `log verify` on a damaged dir: it must fail, and say so on stderr.
fn verify_fails(dir: &Path) -> String {
    let run = log_verify(dir);
    assert!(
        !run.success(),
        "log verify must fail on a damaged dir, but it passed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.contains("log verify FAILED"), "stderr must report the failure: {}", run.stderr);
    run.stderr
}

fn assert_names_seq(stderr: &str, seq: u64) {
    assert!(stderr.contains(&format!("FAILED at seq {seq}:")), "stderr must name seq {seq}: {stderr}");
}

#[test]
fn clean_ledger_verifies_and_reports_its_size() {
    let golden = Golden::build();
    let run = golden.ledger.log_verify();
    assert!(run.success(), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("log intact: {} events", golden.events)), "{}", run.stdout);
    // Verify is read-only: a second run sees the same thing.
    let again = golden.ledger.log_verify();
    assert!(
        again.success() && again.stdout.contains(&format!("log intact: {} events", golden.events)),
        "{}",
        again.stderr
    );
}

#[test]
fn flipped_event_payload_byte_names_its_seq() {
    let golden = Golden::build();
    let k = golden.events / 2;
    let dir = golden.copy("payload");
    let segment = golden.event_segment(&dir);
    let mut bytes = std::fs::read(&segment).unwrap();
    let frame = &golden.event_frames(&dir)[k as usize];
    let at = frame.offset + frames::HEADER + frame.record.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    assert_names_seq(&stderr, k);
}

#[test]
fn flipped_event_payload_byte_with_recomputed_crc_names_its_seq() {
    // An attacker who fixes the frame CRC is still caught: by the event decoder or by the
    // stored leaf hash / checkpoint root.
    let golden = Golden::build();
    let k = golden.events / 2 + 1;
    let dir = golden.copy("payload-crc");
    let mut frames_now = golden.event_frames(&dir);
    let record = &mut frames_now[k as usize].record;
    let at = record.len() - 3;
    record[at] ^= 0x01;
    std::fs::write(golden.event_segment(&dir), frames::encode(&frames_now)).unwrap();
    let stderr = verify_fails(&dir);
    assert_names_seq(&stderr, k);
}

#[test]
fn flipped_node_of_the_lowest_stored_level_names_its_first_seq() {
    let golden = Golden::build();
    let dir = golden.copy("leaf");
    // Leaves and levels 1-3 are not stored (they are recomputed from the events); level 4
    // is the lowest on disk. Node (level 4, index 1) covers events 16 to 31.
    assert!(!dir.join("log/tree/level-00.hash").exists(), "leaf hashes are not stored");
    let path = dir.join("log/tree/level-04.hash");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, golden.events / 16 * 32, "level 4 is complete after a clean stop");
    bytes[32 + 7] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    assert_names_seq(&stderr, 16);
    assert!(stderr.contains("level 4"), "{stderr}");
}

#[test]
fn flipped_stored_inner_node_names_its_first_seq() {
    let golden = Golden::build();
    let dir = golden.copy("node");
    // Node (level 5, index 0) covers events 0 to 31.
    let path = dir.join("log/tree/level-05.hash");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, golden.events / 32 * 32);
    bytes[0] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    assert_names_seq(&stderr, 0);
    assert!(stderr.contains("level 5"), "{stderr}");
}

#[test]
fn altered_projection_row_fails() {
    let golden = Golden::build();
    let dir = golden.copy("projection");
    let path = dir.join("projections.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = TARGET_NAME.as_bytes();
    let mut changed = 0;
    let mut from = 0;
    while let Some(at) = find_bytes(&bytes, needle, from) {
        // "tamper-target-name" → "tamper-target-nbme": same length, still valid UTF-8.
        bytes[at + needle.len() - 3] = b'b';
        changed += 1;
        from = at + needle.len();
    }
    assert!(changed > 0, "the key's name must be stored in the projections");
    std::fs::write(&path, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    assert!(
        stderr.contains("projection") || stderr.contains("redb") || stderr.contains("corrupt"),
        "the failure must be about the projections: {stderr}"
    );
}

/// The records of the checkpoint log, and the path of its one segment.
fn checkpoints(dir: &Path) -> (PathBuf, Vec<Frame>) {
    let segment = single_segment(&dir.join("log/checkpoints"));
    let frames = frames::parse(&std::fs::read(&segment).unwrap());
    (segment, frames)
}

/// Splits a checkpoint record: 8 bytes of time, then the signed note
/// (`origin\nsize\nbase64 root\n\n— name signature\n`).
fn note_lines(record: &[u8]) -> Vec<String> {
    let note = std::str::from_utf8(&record[8..]).expect("note is UTF-8");
    note.split('\n').map(str::to_owned).collect()
}

#[test]
fn raw_flip_in_a_checkpoint_signature_fails() {
    let golden = Golden::build();
    let dir = golden.copy("checkpoint-raw");
    let (segment, records) = checkpoints(&dir);
    assert!(records.len() >= 3, "expected several checkpoints, found {}", records.len());
    // A checkpoint in the middle: damage in the last one could pass for a torn write.
    let victim = &records[records.len() / 2];
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = victim.offset + frames::HEADER + victim.record.len() - 10; // inside the base64 signature
    bytes[at] ^= 0x02;
    std::fs::write(&segment, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    assert!(stderr.contains("checkpoints"), "the failure must point at the checkpoint log: {stderr}");
}

#[test]
fn raw_flip_in_a_checkpoint_does_not_blame_an_intact_event() {
    let golden = Golden::build();
    let dir = golden.copy("checkpoint-raw-blame");
    let (segment, records) = checkpoints(&dir);
    let index = records.len() / 2;
    let victim = &records[index];
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[victim.offset + frames::HEADER + victim.record.len() - 10] ^= 0x02;
    std::fs::write(&segment, &bytes).unwrap();
    let stderr = verify_fails(&dir);
    // BUG (product): a CRC error in checkpoint record #index is reported as
    // "FAILED at seq {index}: event {index}: corrupt log … checkpoints/seg-….log (record seq
    // {index})": the checkpoint's record number is passed off as an event seq, and event
    // {index} is intact. (keyledger_log::verify: `From<SegmentError> for LogVerifyError`
    // maps every `Corrupt` to `Event`, including the checkpoint log's.)
    assert!(
        !stderr.contains(&format!("FAILED at seq {index}:")) && !stderr.contains(&format!("event {index}:")),
        "damage to checkpoint #{index} must not be blamed on intact event {index}: {stderr}"
    );
}

#[test]
fn checkpoint_with_forged_root_and_valid_crc_fails_its_signature() {
    let golden = Golden::build();
    let dir = golden.copy("checkpoint-forged");
    let (segment, mut records) = checkpoints(&dir);
    let index = records.len() / 2;
    let record = &records[index].record;
    let mut lines = note_lines(record);
    // Line 2 is the base64 root: replace it by the root of an all-zero hash.
    let forged_root = "A".repeat(43) + "=";
    assert_ne!(lines[2], forged_root);
    assert_eq!(lines[2].len(), forged_root.len(), "a 32-byte root is 44 base64 chars");
    lines[2] = forged_root;
    let mut forged = record[..8].to_vec();
    forged.extend_from_slice(lines.join("\n").as_bytes());
    records[index].record = forged;
    std::fs::write(&segment, frames::encode(&records)).unwrap();
    let stderr = verify_fails(&dir);
    assert!(stderr.contains(&format!("checkpoint #{index}")), "must name the forged checkpoint: {stderr}");
    assert!(!stderr.contains("CRC"), "the CRC is valid; the signature must be what catches it: {stderr}");
}

#[test]
fn checkpoint_re_signed_with_the_real_key_but_a_forged_root_names_its_seq() {
    // Someone holding signing.key re-signs a checkpoint over a wrong root: the signature is
    // valid, so only the root check against the events can catch it.
    let golden = Golden::build();
    let dir = golden.copy("checkpoint-resigned");
    let (segment, mut records) = checkpoints(&dir);
    let index = records.len() / 2;
    let lines = note_lines(&records[index].record);
    let (origin, size) = (lines[0].clone(), lines[1].parse::<u64>().expect("size line"));
    assert!(size > 0 && size < golden.events, "pick a checkpoint in the middle (size {size})");
    let secrets = keyledger_ledger::datadir::load(&dir).expect("load secrets");
    assert_eq!(secrets.origin, origin);
    let checkpoint = keyledger_verify::note::Checkpoint::new(origin, size, [0x42; 32]);
    let note = keyledger_verify::note::sign_checkpoint(&checkpoint, &secrets.signer).expect("sign");
    let mut forged = records[index].record[..8].to_vec();
    forged.extend_from_slice(note.as_bytes());
    records[index].record = forged;
    std::fs::write(&segment, frames::encode(&records)).unwrap();
    let stderr = verify_fails(&dir);
    assert!(stderr.contains(&format!("checkpoint #{index}")), "{stderr}");
    assert!(stderr.contains("root does not match"), "{stderr}");
    assert_names_seq(&stderr, size - 1);
}

#[test]
fn event_deleted_from_the_middle_names_its_seq() {
    let golden = Golden::build();
    let k = golden.events / 2;
    let dir = golden.copy("delete-middle");
    let mut frames_now = golden.event_frames(&dir);
    let removed = frames_now.remove(k as usize);
    if removed.flags & COMMIT != 0 {
        // Keep the batch boundary: the frame before it now ends the batch.
        frames_now[k as usize - 1].flags |= COMMIT;
    }
    std::fs::write(golden.event_segment(&dir), frames::encode(&frames_now)).unwrap();
    let stderr = verify_fails(&dir);
    // BUG (product; docs/operations.md, "`keyledger log verify`": it names the first bad seq):
    // verify compares the event count with the latest checkpoint before scanning the events, so it
    // reports "FAILED at seq {N-1}: … events from seq {N-1} on are missing" (the end of the log)
    // instead of seq k, where position k now holds event k+1.
    assert_names_seq(&stderr, k);
}

#[test]
fn last_event_removed_fails_against_the_final_checkpoint() {
    let golden = Golden::build();
    let last = golden.events - 1;
    let dir = golden.copy("delete-last");
    let mut frames_now = golden.event_frames(&dir);
    frames_now.pop();
    frames_now.last_mut().unwrap().flags |= COMMIT;
    std::fs::write(golden.event_segment(&dir), frames::encode(&frames_now)).unwrap();
    let stderr = verify_fails(&dir);
    assert_names_seq(&stderr, last);
}

#[test]
fn second_init_refuses_and_changes_nothing_and_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let ledger = Ledger::init();
    let dir = &ledger.data_dir;
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700, "the data dir is private");
    assert_eq!(mode(dir.join("signing.key")), 0o600);
    assert_eq!(mode(dir.join("pepper.key")), 0o600);
    assert!(ledger.admin_key.starts_with("kl_live_"), "{}", ledger.admin_key);
    assert!(ledger.admin_key_id.starts_with("key_"), "{}", ledger.admin_key_id);
    assert_eq!(ledger.init_output["data_dir"].as_str(), Some(path_str(dir)));

    let before = snapshot(dir);
    let contents_before: Vec<Vec<u8>> =
        keyledger_e2e::files_under(dir).iter().map(|p| std::fs::read(p).unwrap()).collect();
    let again = keyledger(&["init", "--data-dir", path_str(dir)]);
    assert!(!again.success(), "a second init must refuse");
    assert!(
        again.stdout.trim().is_empty(),
        "a refused init prints no JSON (no new admin key): {}",
        again.stdout
    );
    assert!(again.stderr.contains("already initialised"), "clear message expected: {}", again.stderr);
    assert_eq!(snapshot(dir), before, "a refused init must change nothing");
    let contents_after: Vec<Vec<u8>> =
        keyledger_e2e::files_under(dir).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(contents_before == contents_after, "file contents changed");
    // No staging directory left beside it either.
    let siblings: Vec<_> =
        std::fs::read_dir(ledger.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("data")], "init left something beside the data dir");
    // And the original admin key still works.
    let server = ledger.serve(&[]);
    let me = server.client().get(&format!("/v1/keys/{}", ledger.admin_key_id), &ledger.admin_key);
    assert_eq!(me.status, 200, "{}", me.dump());
    server.stop();
    assert!(ledger.log_verify().success());
}

#[test]
fn raw_flip_in_the_last_checkpoint_is_not_counted_as_verified() {
    // A damaged frame at the very end of the checkpoint log is indistinguishable from a checkpoint
    // write torn by a crash, which must not fail verification (docs/log-format.md, "Durability and
    // failure, as seen on disk"); but verify must not count it as a verified checkpoint either.
    let golden = Golden::build();
    let dir = golden.copy("checkpoint-last");
    let (segment, records) = checkpoints(&dir);
    let clean = log_verify(&dir);
    assert!(clean.stdout.contains(&format!("{} checkpoints verified", records.len())), "{}", clean.stdout);
    let victim = records.last().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = victim.offset + frames::HEADER + victim.record.len() - 10;
    bytes[at] ^= 0x02;
    std::fs::write(&segment, &bytes).unwrap();
    let run = log_verify(&dir);
    assert!(
        !run.success() || run.stdout.contains(&format!("{} checkpoints verified", records.len() - 1)),
        "the damaged last checkpoint must not be reported as verified:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}
