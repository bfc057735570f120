//! `keyledger scan PATH… [--git] [--lookup] [--revoke]`: finds keyledger keys in files and,
//! with `--git`, in every commit of a repository's history (docs/leaks.md).
//!
//! Finding is offline: a string is reported only when it has a key's shape and its checksum
//! holds ([`keyledger_core::scan`]), so random strings and near-misses never are. A finding
//! is printed with where it is and the key's hint, never the secret. `--lookup` asks the
//! server in one call per 500 candidates which are keys and their status
//! (`POST /v1/audit/lookup/bulk`); `--revoke` then revokes the active ones after a
//! confirmation (`--yes` without a terminal).
//!
//! Exit status: 0 when nothing of concern was found; 1 when a `live` key was found (with
//! `--lookup`: when a found key is still active, in either environment, and was not revoked
//! by `--revoke`), so the command works as a pre-commit hook or a CI step; the admin
//! commands' codes (2 usage, 3 auth, …) when something else failed.

use crate::client::{Client, ClientError};
use crate::connection::{Connection, emit, emit_json, finish};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use keyledger_core::Environment;
use keyledger_core::scan::{Found, find_secrets};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Files larger than this are skipped (and said so): keys live in source and config files.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Candidates per bulk lookup request (the server's limit).
const LOOKUP_CHUNK: usize = 500;
/// Most findings kept; a scan that finds more stops and says so.
const MAX_FINDINGS: usize = 100_000;

#[derive(Args)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively, `.git` excluded).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Also scan every commit of the git repository at each directory (`git log --all -p`).
    #[arg(long)]
    git: bool,
    /// Ask the server which findings are keys, and their status (needs an admin key with
    /// `ledger:audit:read`).
    #[arg(long)]
    lookup: bool,
    /// Revoke the active keys found (implies --lookup; asks for confirmation).
    #[arg(long)]
    revoke: bool,
    /// Do not ask before revoking (required when stdin is not a terminal).
    #[arg(long, requires = "revoke")]
    yes: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Where a secret was found.
struct Finding {
    /// `path:line`, or `path:line (commit abcdef012345)` in history.
    location: String,
    environment: Environment,
    hint: String,
    secret: keyledger_core::Secret,
}

/// What the server said a finding is.
#[derive(Clone)]
struct Status {
    key_id: String,
    workspace: String,
    status: String,
}

pub fn run(args: ScanArgs) -> ExitCode {
    let findings = match collect(&args) {
        Ok(findings) => findings,
        Err(error) => return finish(Err(error)),
    };
    if !(args.lookup || args.revoke) {
        report(&findings, &HashMap::new(), args.connection.json);
        let live = findings.iter().any(|f| f.environment == Environment::Live);
        return if live { ExitCode::from(1) } else { ExitCode::SUCCESS };
    }
    let outcome = args.connection.client().and_then(|client| {
        let mut statuses = lookup(&client, &findings)?;
        if args.revoke {
            revoke(&client, &findings, &mut statuses, args.yes)?;
        }
        Ok(statuses)
    });
    match outcome {
        Ok(statuses) => {
            report(&findings, &statuses, args.connection.json);
            let active = statuses.values().any(|s| s.status == "active");
            if active { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(error) => finish(Err(error)),
    }
}

/// Every finding under `args.paths` (and their histories with `--git`).
fn collect(args: &ScanArgs) -> Result<Vec<Finding>, ClientError> {
    let mut files = Vec::new();
    for path in &args.paths {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            walk(path, &mut files);
        } else {
            files.push(path.clone());
        }
    }
    let progress = progress_bar(files.len() as u64, "files");
    let mut findings = Vec::new();
    for file in &files {
        progress.inc(1);
        scan_file(file, &mut findings);
        if findings.len() >= MAX_FINDINGS {
            break;
        }
    }
    progress.finish_and_clear();
    if args.git {
        for path in args.paths.iter().filter(|p| p.is_dir()) {
            scan_history(path, &mut findings)?;
        }
    }
    if findings.len() >= MAX_FINDINGS {
        eprintln!("keyledger: stopped after {MAX_FINDINGS} findings");
    }
    Ok(findings)
}

/// A bar on a terminal's stderr; nothing otherwise.
fn progress_bar(length: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// The regular files under `dir`, recursively; symbolic links are not followed and `.git`
/// directories are left to `--git`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("keyledger: cannot read directory {}", dir.display());
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() && entry.file_name() != ".git" {
            walk(&entry.path(), files);
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
}

fn scan_file(path: &Path, findings: &mut Vec<Finding>) {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            eprintln!("keyledger: skipped {} (larger than {} MiB)", path.display(), MAX_FILE_BYTES >> 20);
            return;
        }
        Err(_) => return,
        Ok(_) => {}
    }
    let Ok(bytes) = std::fs::read(path) else {
        eprintln!("keyledger: cannot read {}", path.display());
        return;
    };
    let text = String::from_utf8_lossy(&bytes);
    for found in find_secrets(&text) {
        let line = 1 + text[..found.offset].bytes().filter(|&b| b == b'\n').count();
        findings.push(finding(format!("{}:{line}", path.display()), found));
    }
}

fn finding(location: String, found: Found) -> Finding {
    Finding { location, environment: found.environment, hint: found.hint, secret: found.secret }
}

/// Scans the lines every commit of the repository at `dir` added (`git log --all -p -U0`,
/// oldest first), reporting each with its file, line and commit.
fn scan_history(dir: &Path, findings: &mut Vec<Finding>) -> Result<(), ClientError> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "--all", "--reverse", "-p", "-U0", "--no-color", "--no-ext-diff", "--no-textconv"])
        .arg("--format=commit %H")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ClientError::Usage(format!("cannot run git: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| ClientError::Usage("cannot read git's output".into()))?;
    let progress = progress_bar(0, "commits");
    let mut history = History::default();
    let mut reader = std::io::BufReader::new(stdout);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(ClientError::Usage(format!("cannot read git's output: {e}"))),
        }
        let line = String::from_utf8_lossy(&raw);
        if history.read(line.trim_end_matches(['\n', '\r']), findings) {
            progress.inc(1);
        }
        if findings.len() >= MAX_FINDINGS {
            let _ = child.kill();
            break;
        }
    }
    progress.finish_and_clear();
    let output = child.wait_with_output().map_err(|e| ClientError::Usage(format!("git failed: {e}")))?;
    if !output.status.success() && findings.len() < MAX_FINDINGS {
        let message = String::from_utf8_lossy(&output.stderr);
        return Err(ClientError::Usage(format!("git log in {} failed: {}", dir.display(), message.trim())));
    }
    Ok(())
}

/// Where `git log -p -U0` output is: the commit, the file, the next added line's number.
#[derive(Default)]
struct History {
    commit: String,
    file: String,
    line: usize,
}

impl History {
    /// Reads one line of output; true when it starts a new commit.
    fn read(&mut self, line: &str, findings: &mut Vec<Finding>) -> bool {
        if let Some(commit) = line.strip_prefix("commit ") {
            self.commit = commit.chars().take(12).collect();
            return true;
        }
        if let Some(file) = line.strip_prefix("+++ ") {
            self.file = file.strip_prefix("b/").unwrap_or(file).to_owned();
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            // `@@ -a,b +c,d @@`: the added lines start at c.
            self.line = hunk
                .split(' ')
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|start| start.parse().ok())
                .unwrap_or(0);
        } else if let Some(added) = line.strip_prefix('+') {
            for found in find_secrets(added) {
                let location = format!("{}:{} (commit {})", self.file, self.line, self.commit);
                findings.push(finding(location, found));
            }
            self.line += 1;
        }
        false
    }
}

/// The server's answer for each distinct finding, by its position in `findings` of the
/// first occurrence (keys of the caller's workspaces only).
fn lookup(client: &Client, findings: &[Finding]) -> Result<HashMap<usize, Status>, ClientError> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (index, finding) in findings.iter().enumerate() {
        first.entry(finding.secret.expose()).or_insert(index);
    }
    let mut distinct: Vec<(usize, &str)> = first.into_iter().map(|(secret, index)| (index, secret)).collect();
    distinct.sort_unstable();
    let mut statuses = HashMap::new();
    for chunk in distinct.chunks(LOOKUP_CHUNK) {
        let secrets: Vec<&str> = chunk.iter().map(|(_, secret)| *secret).collect();
        let answer = client.lookup_bulk(&secrets)?;
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        if results.len() != chunk.len() {
            return Err(ClientError::Transport(
                "the bulk lookup answered a different number of results".into(),
            ));
        }
        for ((index, _), result) in chunk.iter().zip(results) {
            if result["found"] == json!(true) {
                let text = |field: &str| result[field].as_str().unwrap_or_default().to_owned();
                let status =
                    Status { key_id: text("key_id"), workspace: text("workspace"), status: text("status") };
                statuses.insert(*index, status);
            }
        }
    }
    // Every occurrence of a secret shares its first occurrence's status.
    let mut by_secret: HashMap<&str, Status> = HashMap::new();
    for (index, status) in &statuses {
        by_secret.insert(findings[*index].secret.expose(), status.clone());
    }
    Ok(findings
        .iter()
        .enumerate()
        .filter_map(|(index, f)| by_secret.get(f.secret.expose()).map(|s| (index, s.clone())))
        .collect())
}

/// Revokes the active keys among `statuses` after confirmation, marking them revoked.
fn revoke(
    client: &Client,
    findings: &[Finding],
    statuses: &mut HashMap<usize, Status>,
    yes: bool,
) -> Result<(), ClientError> {
    let mut active: Vec<(String, String)> = statuses
        .iter()
        .filter(|(_, s)| s.status == "active")
        .map(|(index, s)| (s.key_id.clone(), findings[*index].location.clone()))
        .collect();
    active.sort();
    active.dedup_by(|a, b| a.0 == b.0);
    if active.is_empty() {
        return Ok(());
    }
    if !yes {
        confirm(active.len())?;
    }
    for (key_id, location) in &active {
        let reason = format!("found by keyledger scan at {location}");
        client.revoke(key_id, Some(&reason))?;
        eprintln!("keyledger: revoked {key_id}");
        for status in statuses.values_mut().filter(|s| &s.key_id == key_id) {
            status.status = "revoked".into();
        }
    }
    Ok(())
}

fn confirm(count: usize) -> Result<(), ClientError> {
    let question = format!(
        "Revoke the {count} active key(s) found, immediately and irreversibly? Type `revoke` to confirm: "
    );
    crate::connection::confirm(&question, "revoke", "revoke the keys found")
}

/// Prints the findings (never a secret): one line each, or a JSON array with `--json`.
fn report(findings: &[Finding], statuses: &HashMap<usize, Status>, as_json: bool) {
    if as_json {
        let list: Vec<Value> = findings
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let mut entry = json!({
                    "location": f.location,
                    "environment": f.environment.as_str(),
                    "hint": f.hint,
                });
                if let Some(s) = statuses.get(&index) {
                    entry["key_id"] = json!(s.key_id);
                    entry["workspace"] = json!(s.workspace);
                    entry["status"] = json!(s.status);
                }
                entry
            })
            .collect();
        emit_json(&json!({ "findings": list }));
        return;
    }
    let mut text = String::new();
    for (index, f) in findings.iter().enumerate() {
        text.push_str(&format!("{}: {} ({})", f.location, f.hint, f.environment));
        if let Some(s) = statuses.get(&index) {
            text.push_str(&format!(" {} in {}: {}", s.key_id, s.workspace, s.status));
        }
        text.push('\n');
    }
    text.push_str(&format!("{} finding(s)\n", findings.len()));
    emit(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{KeyPrefix, Secret};

    fn key() -> Secret {
        Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap()
    }

    #[test]
    fn history_lines_carry_the_file_line_and_commit_of_an_added_key() {
        let secret = key();
        let diff = format!(
            "commit 0123456789abcdef0123456789abcdef01234567\n\ndiff --git a/x b/src/app.env\n--- /dev/null\n+++ b/src/app.env\n@@ -0,0 +7,2 @@\n+NAME=x\n+KEY={}\n-OLD={}\n",
            secret.expose(),
            secret.expose()
        );
        let mut history = History::default();
        let mut findings = Vec::new();
        let commits = diff.lines().filter(|line| history.read(line, &mut findings)).count();
        assert_eq!(commits, 1);
        assert_eq!(findings.len(), 1, "a removed line is not a finding");
        assert_eq!(findings[0].location, "src/app.env:8 (commit 0123456789ab)");
        assert_eq!(findings[0].hint, secret.hint());
    }
}
