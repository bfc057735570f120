//! Offline proofs of one event (docs/proof-bundles.md): `keyledger audit prove` fetches an
//! event's bytes, the latest checkpoint and the inclusion proof from a running server and
//! writes them as a C2SP tlog-proof bundle ([`prove`]); `keyledger proof verify` checks a
//! bundle with no server, against the log's key and optionally a witness quorum.
//!
//! Both are thin: the format and every check are `keyledger_verify::proof_bundle`, which
//! an auditor's own verifier can use as well.
//!
//! Exit codes of `proof verify`: 0 valid; 1 the bundle is invalid; 2 bad command line or
//! unreadable file. `audit prove` exits like the other audit commands.

use crate::client::{Client, ClientError};
use crate::export::{WitnessArgs, public_key, usage};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use keyledger_verify::merkle::Hash;
use keyledger_verify::note::VerifierKey;
use keyledger_verify::proof_bundle::{MAX_BUNDLE_BYTES, ProofBundle, VerifiedBundle, verify_bundle};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `keyledger proof …`
#[derive(Args)]
pub struct ProofArgs {
    #[command(subcommand)]
    command: ProofCommand,
}

#[derive(Subcommand)]
enum ProofCommand {
    /// Verify a proof bundle (`keyledger audit prove`) offline: the log's signature on the
    /// checkpoint, witness cosignatures, the event's bytes and its inclusion proof. Prints
    /// the event. Exit 0 if valid, 1 if not.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The bundle file (`c2sp.org/tlog-proof@v1`).
    file: PathBuf,
    /// The log's public key: a C2SP note verifier key (`name+id+base64`), the bare 32-byte
    /// key in base64, or a file holding either.
    #[arg(long, env = "KEYLEDGER_PUBLIC_KEY", value_name = "KEY")]
    public_key: String,
    #[command(flatten)]
    witnesses: WitnessArgs,
    /// Print the result and the event as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ProofArgs) -> ExitCode {
    match args.command {
        ProofCommand::Verify(args) => verify(&args),
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let key = match public_key(&args.public_key) {
        Ok(key) => key,
        Err(message) => return usage(message),
    };
    let witnesses = match args.witnesses.quorum() {
        Ok(witnesses) => witnesses,
        Err(message) => return usage(message),
    };
    let text = match read_bundle(&args.file) {
        Ok(text) => text,
        Err(message) => return usage(message),
    };
    match verify_bundle(&text, &key, witnesses.as_ref()) {
        Ok(verified) => {
            let event = keyledger_core::json::event_json(&verified.event);
            if args.json {
                crate::outln!("{}", json!({"valid": true, "proof": summary_json(&verified), "event": event}));
            } else {
                crate::outln!("{}", summary(&verified));
                crate::outln!(
                    "{}",
                    serde_json::to_string_pretty(&event).unwrap_or_else(|_| event.to_string())
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            if args.json {
                crate::outln!("{}", json!({"valid": false, "error": error.to_string()}));
            }
            eprintln!("proof verify FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The file's text, at most [`MAX_BUNDLE_BYTES`] (a larger file is refused by the parser).
fn read_bundle(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text: not a proof bundle", path.display()))
}

fn summary(verified: &VerifiedBundle) -> String {
    let mut line = format!(
        "proof valid: event {} ({}) is leaf {} of the checkpoint of {} events, root {}, signed by {}",
        verified.event.seq,
        verified.event.payload.kind().as_str(),
        verified.event.seq,
        verified.checkpoint.size,
        hex::encode(verified.checkpoint.root),
        verified.checkpoint.origin,
    );
    if !verified.cosigned.is_empty() {
        let names: Vec<&str> = verified.cosigned.iter().map(|c| c.witness.name()).collect();
        line.push_str(&format!("; cosigned by {}", names.join(", ")));
    }
    line
}

fn summary_json(verified: &VerifiedBundle) -> Value {
    json!({
        "seq": verified.event.seq,
        "leaf_hash": hex::encode(verified.leaf_hash),
        "origin": verified.checkpoint.origin,
        "checkpoint_size": verified.checkpoint.size,
        "checkpoint_root": hex::encode(verified.checkpoint.root),
        "cosigned_by": verified.cosigned.iter().map(|c| c.witness.to_string()).collect::<Vec<_>>(),
    })
}

// ---- audit prove ----

/// Which event to prove: a seq, or a request id resolved through the audit API.
fn resolve(client: &Client, target: &str) -> Result<u64, ClientError> {
    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        return target.parse().map_err(|_| ClientError::Usage(format!("{target} is too large for a seq")));
    }
    let answer = client.audit_request(target)?;
    let seqs: Vec<u64> = answer
        .get("events")
        .and_then(Value::as_array)
        .map(|events| events.iter().filter_map(|e| e.get("seq").and_then(Value::as_u64)).collect())
        .unwrap_or_default();
    match seqs.as_slice() {
        [] => Err(ClientError::Transport(format!("the server lists no event for request {target}"))),
        [seq] => Ok(*seq),
        several => {
            let list: Vec<String> = several.iter().map(u64::to_string).collect();
            Err(ClientError::Usage(format!(
                "request {target} has {} events (seq {}): prove one at a time by its seq",
                several.len(),
                list.join(", ")
            )))
        }
    }
}

fn bad_answer(what: &str) -> ClientError {
    ClientError::Transport(format!("the server's {what} answer is malformed"))
}

fn hex_hash(value: &Value) -> Option<Hash> {
    hex::decode(value.as_str()?).ok()?.try_into().ok()
}

/// Builds the bundle of the event `target` (a seq or a request id), waiting up to `wait`
/// for a checkpoint that covers it, checks it against the server's own key (a mismatch
/// means the server's answers are inconsistent), and writes it to `out` atomically.
/// Returns what was written, for the command's output.
pub(crate) fn prove(client: &Client, target: &str, out: &Path, wait: Duration) -> Result<Value, ClientError> {
    let seq = resolve(client, target)?;
    let entry = client.log_entry(seq)?;
    let raw = entry
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|raw| STANDARD.decode(raw).ok())
        .ok_or_else(|| bad_answer("log entry"))?;
    let deadline = Instant::now() + wait;
    let checkpoint = loop {
        let covering = match client.checkpoint() {
            Ok(answer) => {
                Some(answer).filter(|a| a.get("size").and_then(Value::as_u64).is_some_and(|s| s > seq))
            }
            Err(ClientError::NotFound { .. }) => None,
            Err(error) => return Err(error),
        };
        if let Some(checkpoint) = covering {
            break checkpoint;
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Server {
                status: 503,
                code: "unavailable".into(),
                message: format!(
                    "no signed checkpoint covers event {seq} yet; retry after the next checkpoint (or pass a longer --wait)"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let size = checkpoint.get("size").and_then(Value::as_u64).ok_or_else(|| bad_answer("checkpoint"))?;
    let note = checkpoint.get("note").and_then(Value::as_str).ok_or_else(|| bad_answer("checkpoint"))?;
    let proof = client
        .inclusion_proof(seq, size)?
        .get("hashes")
        .and_then(Value::as_array)
        .and_then(|hashes| hashes.iter().map(hex_hash).collect::<Option<Vec<Hash>>>())
        .ok_or_else(|| bad_answer("inclusion proof"))?;
    let text = ProofBundle { extra: Some(raw), index: seq, proof, checkpoint: note.to_owned() }.encode();
    let key: VerifierKey = client
        .public_key()?
        .get("public_key")
        .and_then(Value::as_str)
        .and_then(|key| key.parse().ok())
        .ok_or_else(|| bad_answer("public key"))?;
    let verified = verify_bundle(&text, &key, None).map_err(|e| {
        ClientError::Transport(format!("the server's answers do not make a valid proof of event {seq}: {e}"))
    })?;
    write_atomically(out, text.as_bytes())?;
    Ok(json!({
        "out": out.display().to_string(),
        "seq": seq,
        "kind": verified.event.payload.kind().as_str(),
        "checkpoint_size": size,
        "public_key": key.to_string(),
    }))
}

/// Writes `bytes` to `FILE.partial`, syncs it, makes it readable by all (0644) and renames it
/// to `out`: a reader never sees half a bundle.
fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "proof".into());
    name.push(".partial");
    let partial = out.with_file_name(name);
    let fail = |e: std::io::Error| ClientError::Usage(format!("cannot write {}: {e}", out.display()));
    let written = (|| {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(bytes)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        file.sync_all()?;
        std::fs::rename(&partial, out)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(error));
    }
    Ok(())
}
