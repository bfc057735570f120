//! `keyledger report compliance` (download a signed compliance report from a running
//! server, as JSON, HTML, or a PDF printed from the HTML by headless Chromium) and
//! `keyledger report verify` (check one: its signature and checkpoint, that an HTML page
//! shows exactly its signed JSON, with `--witness` that trusted witnesses cosigned its
//! checkpoint, and with `--export` or `--url` that every figure follows from the log's
//! events; docs/compliance.md, "Verifying a report").
//!
//! Exit codes: 0 valid / written; 1 the report is invalid; 2 bad command line or local
//! input; and for `compliance` and `--url` the admin client's codes (3 auth, 4 not found,
//! 5 server, 6 transport; see `crate::client::exit`).

use crate::client::{Client, ClientError};
use crate::connection::{Connection, finish};
use crate::export::{WitnessArgs, public_key, usage};
use clap::{Args, Subcommand, ValueEnum};
use keyledger_verify::cosignature::Cosigned;
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use keyledger_verify::report::{
    Checked, Coverage, OpenedReport, Recompute, ReportError, bundle_entries, check_with_export, open_report,
    parse_report_file,
};
use serde_json::json;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Entries per entry bundle (C2SP tlog-tiles).
const TILE_WIDTH: u64 = 256;
/// The largest report file read (a report of every key of a large ledger fits).
const MAX_REPORT: u64 = 512 << 20;
/// The largest response read into memory: a full entry bundle of the longest entries.
const MAX_BODY: usize = 256 * (2 + 65_535);

/// `keyledger report …`
#[derive(Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Download a signed compliance report of a period (docs/compliance.md).
    Compliance(ComplianceArgs),
    /// Verify a report (JSON or HTML): its signature and checkpoint, and with `--export` or
    /// `--url` that every figure follows from the log's events.
    Verify(VerifyArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Html,
    Json,
    Pdf,
}

#[derive(Args)]
struct ComplianceArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this workspace (default: every workspace the admin key may see).
    #[arg(long)]
    workspace: Option<String>,
    /// Start of the period (inclusive): RFC 3339 or YYYY-MM-DD (UTC).
    #[arg(long)]
    from: String,
    /// End of the period (exclusive): RFC 3339 or YYYY-MM-DD (UTC).
    #[arg(long)]
    to: String,
    /// A live key unused for more than this many days is an exception.
    #[arg(long, default_value_t = 90)]
    unused_days: u32,
    /// `html` (read by people, verifiable), `json`, or `pdf` (the HTML printed by headless
    /// Chromium, which must be installed; not verifiable: keep the HTML or JSON too).
    #[arg(long, value_enum, default_value = "html")]
    format: Format,
    /// Where to write the report (written to FILE.partial, renamed when complete).
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    /// The report (`.json` or `.html`).
    file: PathBuf,
    /// The log's public key: a C2SP note verifier key (`name+id+base64`), the bare 32-byte
    /// key in base64, or a file holding either.
    #[arg(long, env = "KEYLEDGER_PUBLIC_KEY", value_name = "KEY")]
    public_key: String,
    /// A saved export (`keyledger export create`) to recompute the figures from: unfiltered
    /// from seq 0, or filtered to the report's one workspace.
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    export: Option<PathBuf>,
    /// Recompute the figures from the server's entry bundles (C2SP tlog-tiles; needs an
    /// admin key with `ledger:audit:read` over every workspace).
    #[arg(long)]
    url: Option<String>,
    /// Admin key for `--url`. Prefer the environment variable.
    #[arg(long, env = "KEYLEDGER_ADMIN_KEY", hide_env_values = true, value_name = "KEY")]
    admin_key: Option<String>,
    #[command(flatten)]
    witnesses: WitnessArgs,
    /// Print a JSON summary instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReportArgs) -> ExitCode {
    match args.command {
        ReportCommand::Compliance(args) => finish(compliance(&args)),
        ReportCommand::Verify(args) => verify(&args),
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    out.with_file_name(name)
}

/// Reads a whole answer, refusing one larger than [`MAX_BODY`].
fn get_bytes(client: &Client, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, ClientError> {
    let mut download = client.get_stream(path, query)?;
    let mut body = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = download.read(&mut buffer)?;
        if n == 0 {
            return Ok(body);
        }
        if body.len() + n > MAX_BODY {
            return Err(ClientError::Transport(format!(
                "GET {path}: the answer is larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&buffer[..n]);
    }
}

fn compliance(args: &ComplianceArgs) -> Result<(), ClientError> {
    let client = args.connection.client()?;
    let format = match args.format {
        Format::Json => "json",
        Format::Html | Format::Pdf => "html",
    };
    let unused_days = args.unused_days.to_string();
    let mut query = vec![("from", args.from.as_str()), ("to", args.to.as_str()), ("format", format)];
    query.push(("unused_days", &unused_days));
    if let Some(workspace) = &args.workspace {
        query.push(("workspace", workspace));
    }
    let chromium = if args.format == Format::Pdf { Some(chromium()?) } else { None };
    let body = get_bytes(&client, "/v1/reports/compliance", &query)?;
    let partial = partial_path(&args.out);
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::File::create(path)
            .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
            .map_err(|e| ClientError::Usage(format!("cannot write {}: {e}", path.display())))
    };
    match chromium {
        None => write(&partial, &body)?,
        Some(chromium) => {
            let dir = scratch_dir()?;
            let html = dir.join("report.html");
            let printed = write(&html, &body).and_then(|()| print_to_pdf(&chromium, &html, &partial, &dir));
            let _ = std::fs::remove_dir_all(&dir);
            printed?;
        }
    }
    std::fs::rename(&partial, &args.out)
        .map_err(|e| ClientError::Usage(format!("cannot rename to {}: {e}", args.out.display())))?;
    eprintln!("report written to {}", args.out.display());
    Ok(())
}

/// A fresh private directory for Chromium's profile and the page it prints.
fn scratch_dir() -> Result<PathBuf, ClientError> {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("keyledger-report-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| ClientError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The Chromium to print with: `KEYLEDGER_CHROMIUM`, else the first of the usual names on
/// the `PATH`.
fn chromium() -> Result<PathBuf, ClientError> {
    if let Some(path) = std::env::var_os("KEYLEDGER_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(ClientError::Usage(
        "--format pdf needs headless Chromium (scripts/install-browser.sh installs it, or set \
         KEYLEDGER_CHROMIUM); --format html is the same report and always works"
            .into(),
    ))
}

fn print_to_pdf(chromium: &Path, html: &Path, pdf: &Path, profile: &Path) -> Result<(), ClientError> {
    let pdf = std::path::absolute(pdf).map_err(|e| ClientError::Usage(format!("{}: {e}", pdf.display())))?;
    let output = std::process::Command::new(chromium)
        .arg("--headless")
        .arg("--disable-gpu")
        .arg("--no-sandbox")
        .arg("--no-pdf-header-footer")
        .arg(format!("--user-data-dir={}", profile.join("profile").display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .map_err(|e| ClientError::Usage(format!("cannot run {}: {e}", chromium.display())))?;
    let written = std::fs::metadata(&pdf).map(|m| m.len() > 0).unwrap_or(false);
    if !output.status.success() || !written {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        return Err(ClientError::Usage(format!("{} could not print the PDF: {last}", chromium.display())));
    }
    Ok(())
}

/// Why `report verify` failed: the report (exit 1), or the command line or a fetch.
enum Failure {
    Invalid(ReportError),
    Usage(String),
    Client(ClientError),
}

fn verify(args: &VerifyArgs) -> ExitCode {
    match check(args) {
        Ok((report, checked, cosigned)) => {
            let cosigned: Vec<String> = cosigned.iter().map(|c| c.witness.to_string()).collect();
            let (origin, size) = (&report.origin, report.anchor.size);
            let proves = match checked.as_ref().map(|c| c.coverage) {
                None => "signature and checkpoint valid; figures NOT recomputed (pass --export or --url)",
                Some(Coverage::CompleteTree) => {
                    "every figure recomputed from all events of the checkpoint's tree (root matches)"
                }
                Some(Coverage::LinesIncluded) => {
                    "every figure recomputed from the export's events, each proven in the log \
                     (a filtered export cannot prove that none was left out)"
                }
            };
            if args.json {
                crate::outln!(
                    "{}",
                    json!({
                        "valid": true,
                        "origin": origin,
                        "checkpoint_size": size,
                        "checkpoint_root": hex::encode(report.anchor.root),
                        "recomputed": checked.is_some(),
                        "complete": checked.as_ref().map(|c| c.coverage == Coverage::CompleteTree),
                        "events": checked.as_ref().map(|c| c.events),
                        "proves": proves,
                        "cosigned_by": cosigned,
                    })
                );
            } else {
                let witnessed = if cosigned.is_empty() {
                    String::new()
                } else {
                    format!(", cosigned by {}", cosigned.join(", "))
                };
                crate::outln!(
                    "report valid: {proves}; anchored to the checkpoint of {size} events of {origin}{witnessed}"
                );
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => usage(message),
        Err(Failure::Client(error)) => finish(Err(error)),
        Err(Failure::Invalid(error)) => {
            if args.json {
                crate::outln!("{}", json!({"valid": false, "error": error.to_string()}));
            }
            eprintln!("report verify FAILED: {error}");
            ExitCode::from(1)
        }
    }
}

fn check(args: &VerifyArgs) -> Result<(OpenedReport, Option<Checked>, Vec<Cosigned>), Failure> {
    let key = public_key(&args.public_key).map_err(Failure::Usage)?;
    let witnesses = args.witnesses.quorum().map_err(Failure::Usage)?;
    let size = std::fs::metadata(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?
        .len();
    if size > MAX_REPORT {
        return Err(Failure::Usage(format!(
            "{} is larger than {MAX_REPORT} bytes: not a report",
            args.file.display()
        )));
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let report =
        open_report(parse_report_file(&text).map_err(Failure::Invalid)?, &key).map_err(Failure::Invalid)?;
    // An HTML page must show exactly what was signed: it is re-rendered from the JSON.
    if !text.trim_start().starts_with('{') && keyledger_ledger::report::html::render(&report.report) != text {
        return Err(Failure::Invalid(ReportError::Malformed(
            "the HTML page is not the rendering of its signed report (its visible content was edited)".into(),
        )));
    }
    let cosigned = match &witnesses {
        Some(witnesses) => report.cosigned_by(witnesses).map_err(Failure::Invalid)?,
        None => Vec::new(),
    };
    let checked = if let Some(export) = &args.export {
        let open = || std::fs::File::open(export).map(|f| BufReader::with_capacity(1 << 20, f));
        if let Err(e) = open() {
            return Err(Failure::Usage(format!("cannot open {}: {e}", export.display())));
        }
        Some(check_with_export(&report, &key, open).map_err(Failure::Invalid)?.0)
    } else if let Some(url) = &args.url {
        let client = Client::new(url, args.admin_key.as_deref().unwrap_or("")).map_err(Failure::Client)?;
        Some(check_with_tiles(&report, &key, &client)?)
    } else {
        None
    };
    Ok((report, checked, cosigned))
}

/// `N` of a tile path: 3-digit groups, all but the last prefixed by `x` (C2SP tlog-tiles).
fn tile_index(n: u64) -> String {
    let digits = format!("{n:03}");
    let digits = format!("{}{digits}", "0".repeat((3 - digits.len() % 3) % 3));
    let groups: Vec<&str> = digits.as_bytes().chunks(3).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { (*g).to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

/// Recomputes the figures from the entry bundles of the server's latest tree, which must
/// include the report's.
fn check_with_tiles(report: &OpenedReport, key: &VerifierKey, client: &Client) -> Result<Checked, Failure> {
    let note = get_bytes(client, "/checkpoint", &[]).map_err(Failure::Client)?;
    let note = String::from_utf8(note).map_err(|_| Failure::Usage("/checkpoint is not text".into()))?;
    let latest = open_checkpoint(&note, key)
        .map_err(|e| Failure::Invalid(ReportError::Checkpoint(format!("the server's checkpoint: {e}"))))?;
    let size = report.anchor.size;
    if latest.size < size {
        return Err(Failure::Invalid(ReportError::Checkpoint(format!(
            "the server's tree ({} events) is smaller than the report's ({size})",
            latest.size
        ))));
    }
    let mut recompute = Recompute::new(report);
    let mut seq = 0u64;
    let mut bundle = 0u64;
    while seq < size {
        let width = (latest.size - bundle * TILE_WIDTH).min(TILE_WIDTH);
        let path = if width == TILE_WIDTH {
            format!("/tile/entries/{}", tile_index(bundle))
        } else {
            format!("/tile/entries/{}.p/{width}", tile_index(bundle))
        };
        let bytes = get_bytes(client, &path, &[]).map_err(Failure::Client)?;
        let entries = bundle_entries(&bytes).map_err(Failure::Invalid)?;
        if entries.len() as u64 != width {
            return Err(Failure::Invalid(ReportError::Events(format!(
                "{path} holds {} entries",
                entries.len()
            ))));
        }
        for entry in entries {
            if seq >= size {
                break;
            }
            recompute.push_raw(entry).map_err(Failure::Invalid)?;
            seq += 1;
        }
        bundle += 1;
    }
    // Nothing but the recomputed root ties these entries to the report's signed tree.
    recompute.finish_complete().map_err(Failure::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_indexes_are_written_in_groups_of_three() {
        assert_eq!(tile_index(0), "000");
        assert_eq!(tile_index(67), "067");
        assert_eq!(tile_index(1234), "x001/234");
        assert_eq!(tile_index(1_234_067), "x001/x234/067");
    }
}
