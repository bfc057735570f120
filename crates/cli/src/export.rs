//! `keyledger export create` (download an export from a running server) and
//! `keyledger export verify` (check one offline; format in
//! `docs/export-format.md`), which with `--witness` also requires witness cosignatures of
//! the anchor checkpoint (the [`WitnessArgs`] it shares with `keyledger proof verify`).
//!
//! Exit codes: 0 valid / written; 1 the export is invalid; 2 bad command line or local
//! input (unreadable file, malformed public key); and for `create` the admin client's
//! codes (3 auth, 4 not found, 5 server, 6 transport; see [`crate::client::exit`]).

use crate::client::{Client, ClientError, exit};
use crate::connection::finish;
use clap::{Args, Subcommand, ValueEnum};
use keyledger_verify::cosignature::{Quorum, WitnessKey};
use keyledger_verify::export::{Completeness, ExportSummary, verify_export_witnessed};
use keyledger_verify::note::VerifierKey;
use serde_json::{Value, json};
use std::io::{BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `keyledger export …`
#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    command: ExportCommand,
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Download a signed export (JSON Lines) or a flat CSV from a running server.
    Create(CreateArgs),
    /// Verify an export offline: signature, anchor checkpoint, every line against its raw
    /// bytes, order, count, hash, and the Merkle proofs. Exit 0 and a summary if valid.
    Verify(VerifyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Args)]
struct CreateArgs {
    /// Base URL of the keyledger server.
    #[arg(long, env = "KEYLEDGER_URL", default_value = "http://127.0.0.1:7878")]
    url: String,
    /// Admin key with the `ledger:export` scope. Prefer the environment variable.
    #[arg(long, env = "KEYLEDGER_ADMIN_KEY", hide_env_values = true, value_name = "KEY")]
    admin_key: Option<String>,
    /// First event: a seq, or an RFC 3339 time (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// End of the range: a seq, or an RFC 3339 time (exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Only this workspace's events (each line then carries an inclusion proof).
    #[arg(long)]
    workspace: Option<String>,
    /// `jsonl` (signed, verifiable) or `csv` (flat, unsigned).
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Also prove that the export's anchor extends the checkpoint of this size (the size of
    /// a checkpoint you saved earlier with `keyledger log checkpoint`).
    #[arg(long, value_name = "SIZE")]
    consistency_from: Option<u64>,
    /// Where to write the export (written to FILE.partial, renamed when complete).
    #[arg(long, short)]
    out: PathBuf,
    /// Print a JSON summary instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The export file (`-` for standard input).
    file: PathBuf,
    /// The log's public key: a C2SP note verifier key (`name+id+base64`), the bare 32-byte
    /// key in base64, or a file holding either.
    #[arg(long, env = "KEYLEDGER_PUBLIC_KEY", value_name = "KEY")]
    public_key: String,
    /// A signed checkpoint saved earlier (`keyledger log checkpoint --out FILE`): the
    /// export's anchor must extend it.
    #[arg(long, value_name = "FILE")]
    trusted_checkpoint: Option<PathBuf>,
    #[command(flatten)]
    witnesses: WitnessArgs,
    /// Print a JSON summary instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// The witness policy of an offline verification (`export verify`, `proof verify`,
/// `report verify`).
#[derive(Args)]
pub(crate) struct WitnessArgs {
    /// A witness you trust: its verifier key (`name+id+base64`, signature type 0x04), or a
    /// file holding it. Repeatable. The checkpoint must carry valid cosignatures of
    /// `--witness-quorum` of them.
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// How many of the `--witness` keys must have cosigned the checkpoint (default: all).
    #[arg(long, value_name = "K", requires = "witnesses")]
    witness_quorum: Option<usize>,
}

impl WitnessArgs {
    /// The quorum to require, or `None` without `--witness`; a usage message if a key is
    /// malformed, listed twice, or the quorum is out of range.
    pub(crate) fn quorum(&self) -> Result<Option<Quorum>, String> {
        if self.witnesses.is_empty() {
            return Ok(None);
        }
        let keys = self.witnesses.iter().map(|text| witness_key(text)).collect::<Result<Vec<_>, _>>()?;
        let k = self.witness_quorum.unwrap_or(keys.len());
        Quorum::new(keys, k).map(Some).map_err(|e| format!("--witness-quorum: {e}"))
    }
}

/// Parses a witness key given inline or in a file.
fn witness_key(text: &str) -> Result<WitnessKey, String> {
    match text.trim().parse::<WitnessKey>() {
        Ok(key) => Ok(key),
        Err(inline) => match std::fs::read_to_string(text) {
            Ok(contents) => {
                contents.trim().parse().map_err(|e| format!("{text} does not hold a witness key: {e}"))
            }
            Err(_) => Err(format!("--witness: {inline}")),
        },
    }
}

pub fn run(args: ExportArgs) -> ExitCode {
    match args.command {
        ExportCommand::Create(args) => finish(create(&args)),
        ExportCommand::Verify(args) => verify(&args),
    }
}

pub(crate) fn usage(message: String) -> ExitCode {
    eprintln!("keyledger: usage: {message}");
    ExitCode::from(exit::USAGE)
}

/// Parses a public key given inline or in a file.
pub(crate) fn public_key(text: &str) -> Result<VerifierKey, String> {
    match text.trim().parse::<VerifierKey>() {
        Ok(key) => Ok(key),
        Err(inline) => match std::fs::read_to_string(text) {
            Ok(contents) => {
                contents.trim().parse().map_err(|e| format!("{text} does not hold a public key: {e}"))
            }
            Err(_) => Err(format!("--public-key: {inline}")),
        },
    }
}

fn progress_bar(len: Option<u64>, verb: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match len {
        Some(len) => (
            indicatif::ProgressBar::new(len),
            format!(
                "{{spinner}} {verb} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
            ),
        ),
        None => {
            (indicatif::ProgressBar::new_spinner(), format!("{{spinner}} {verb} {{bytes}} {{bytes_per_sec}}"))
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

fn summary_json(summary: &ExportSummary) -> Value {
    json!({
        "valid": true,
        "origin": summary.origin,
        "lines": summary.lines,
        "first_seq": summary.first_seq,
        "last_seq": summary.last_seq,
        "from": summary.first_at,
        "to": summary.last_at,
        "workspace": summary.workspace,
        "filtered": summary.filtered,
        "checkpoint_size": summary.checkpoint_size,
        "checkpoint_root": hex::encode(summary.checkpoint_root),
        "trusted_checkpoint_size": summary.trusted_size,
        "complete_range": summary.completeness == Completeness::Complete,
        "proves": summary.completeness.describe(),
        "cosigned_by": summary.cosigned.iter().map(|c| c.witness.to_string()).collect::<Vec<_>>(),
    })
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
    let trusted = match &args.trusted_checkpoint {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(note) => Some(note),
            Err(e) => return usage(format!("cannot read the trusted checkpoint {}: {e}", path.display())),
        },
    };
    let started = std::time::Instant::now();
    let (result, bar) = if args.file.as_os_str() == "-" {
        (verify_export_witnessed(std::io::stdin().lock(), &key, trusted.as_deref(), witnesses.as_ref()), None)
    } else {
        let file = match std::fs::File::open(&args.file) {
            Ok(file) => file,
            Err(e) => return usage(format!("cannot open {}: {e}", args.file.display())),
        };
        let len = file.metadata().map(|m| m.len()).ok();
        let bar = progress_bar(len, "verifying");
        let reader: Box<dyn Read> = match &bar {
            Some(bar) => Box::new(bar.wrap_read(file)),
            None => Box::new(file),
        };
        (
            verify_export_witnessed(
                BufReader::with_capacity(1 << 20, reader),
                &key,
                trusted.as_deref(),
                witnesses.as_ref(),
            ),
            bar,
        )
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(summary) => {
            if args.json {
                crate::outln!("{}", summary_json(&summary));
            } else {
                crate::outln!("{summary} ({:.2}s)", started.elapsed().as_secs_f64());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            if args.json {
                crate::outln!(
                    "{}",
                    json!({"valid": false, "line": error.line(), "error": error.to_string()})
                );
            }
            eprintln!("export verify FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn create(args: &CreateArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.url, args.admin_key.as_deref().unwrap_or(""))?;
    let format = match args.format {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
    };
    let consistency_from = args.consistency_from.map(|m| m.to_string());
    let query: Vec<(&str, &str)> = [
        ("from", args.from.as_deref()),
        ("to", args.to.as_deref()),
        ("workspace", args.workspace.as_deref()),
        ("format", Some(format)),
        ("consistency_from", consistency_from.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    let mut download = client.get_stream("/v1/export", &query)?;
    let partial = partial_path(&args.out);
    let written = (|| {
        let mut file = std::fs::File::create(&partial)
            .map_err(|e| ClientError::Usage(format!("cannot create {}: {e}", partial.display())))?;
        let bar = progress_bar(None, "downloading");
        let mut buffer = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = download.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            file.write_all(&buffer[..n])
                .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", partial.display())))?;
            total += n as u64;
            if let Some(bar) = &bar {
                bar.set_position(total);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        file.sync_all()
            .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", partial.display())))?;
        Ok(total)
    })();
    let total = match written {
        Ok(total) => total,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    let manifest = match args.format {
        Format::Jsonl => match last_manifest(&partial) {
            Some(manifest) => Some(manifest),
            None => {
                let _ = std::fs::remove_file(&partial);
                return Err(ClientError::Transport(
                    "the download ended without a manifest: the server aborted the export".into(),
                ));
            }
        },
        Format::Csv => None,
    };
    std::fs::rename(&partial, &args.out).map_err(|e| {
        ClientError::Usage(format!("cannot rename {} to {}: {e}", partial.display(), args.out.display()))
    })?;
    let field = |path: &[&str]| {
        let mut value = manifest.as_ref()?;
        for name in path {
            value = value.get(name)?;
        }
        Some(value.clone())
    };
    if args.json {
        crate::outln!(
            "{}",
            json!({
                "out": args.out.display().to_string(),
                "bytes": total,
                "lines": field(&["lines"]),
                "range": field(&["range"]),
                "checkpoint_size": field(&["checkpoint", "size"]),
            })
        );
    } else {
        match field(&["lines"]) {
            Some(lines) => eprintln!(
                "wrote {lines} events ({total} bytes) to {}; check it with `keyledger export verify {} --public-key KEY`",
                args.out.display(),
                args.out.display()
            ),
            None => eprintln!("wrote {total} bytes to {}", args.out.display()),
        }
    }
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "export".into());
    name.push(".partial");
    out.with_file_name(name)
}

/// The manifest object of the file's last line, if it is one.
fn last_manifest(path: &Path) -> Option<Value> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(4 << 20);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let body = tail.strip_suffix(b"\n")?;
    let line = body.rsplit(|&b| b == b'\n').next()?;
    let value: Value = serde_json::from_slice(line).ok()?;
    value.get("manifest").cloned()
}
