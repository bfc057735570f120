//! `cargo xtask crash [--rounds N] [--seed S]`: the long run of the SIGKILL crash test
//! (`tests/crash.rs`). `cargo test` runs that test with a few rounds; this runs
//! it in release mode with many (default [`DEFAULT_ROUNDS`]), echoes its per-round lines,
//! keeps the whole output in `target/crash-logs/`, and ends with a table of the figures
//! the test reports on its last line (`crash-figures: {…}`): rounds survived, operations
//! checked, keys, verifications, losses. The figures quoted in docs/security.md come from
//! here. Fails when the test fails (a round's check, or the load doing nothing).

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

pub const DEFAULT_ROUNDS: u64 = 50;
const FIGURES_PREFIX: &str = "crash-figures: ";

#[derive(Debug)]
pub struct Options {
    pub rounds: u64,
    pub seed: Option<u64>,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options { rounds: DEFAULT_ROUNDS, seed: None };
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        let value = flags.next().with_context(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--rounds" => options.rounds = value?.parse::<u64>().context("--rounds")?.max(1),
            "--seed" => options.seed = Some(value?.parse().context("--seed")?),
            other => bail!("unknown option `{other}` for `crash`"),
        }
    }
    Ok(options)
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    let logs = root.join("target/crash-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let log_path = logs.join(format!("crash-{stamp}.log"));
    let mut log =
        std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut command = crate::cargo();
    command
        .args(["test", "--release", "--package", "keyledger-e2e", "--test", "crash", "--"])
        .args(["--nocapture", "--test-threads", "1"])
        .env("KEYLEDGER_CRASH_ROUNDS", options.rounds.to_string())
        .current_dir(root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    match options.seed {
        Some(seed) => command.env("KEYLEDGER_CRASH_SEED", seed.to_string()),
        None => command.env_remove("KEYLEDGER_CRASH_SEED"),
    };
    eprintln!(
        "xtask: crash test, {} rounds in release mode (whole output: {})",
        options.rounds,
        log_path.display()
    );
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start cargo test")?;
    let mut figures = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading the test's output")?;
            eprintln!("{line}");
            writeln!(log, "{line}").context("writing the crash log")?;
            if let Some(json) = line.strip_prefix(FIGURES_PREFIX) {
                figures = serde_json::from_str::<serde_json::Value>(json).ok();
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!(
            "the crash test FAILED ({status}) after {:.0} s; its output is in {}",
            started.elapsed().as_secs_f64(),
            log_path.display()
        );
    }
    let figures = figures.context("the crash test passed but printed no `crash-figures:` line")?;
    eprintln!("\n{}", table(&figures));
    Ok(())
}

/// The figures as a Markdown table, in the order docs/security.md quotes them.
fn table(figures: &serde_json::Value) -> String {
    let rows = [
        ("rounds survived (SIGKILL, restart, checks)", "rounds"),
        ("… of which with strict usage durability", "strict_rounds"),
        ("acknowledged creates", "creates"),
        ("acknowledged rotations (overlap 0)", "rotations"),
        ("acknowledged revocations", "revocations"),
        ("keys at the end", "keys"),
        ("key presence checks after restarts", "presence_checks"),
        ("per-key GET checks after restarts", "get_checks"),
        ("revoked keys verified (401) after restarts", "revoked_verified_after_restart"),
        ("verifications sent", "verifications"),
        ("… acknowledged (200/401/403), each found in the log", "usage_checked"),
        ("… allowed", "allowed"),
        ("… unanswered (in flight at the kill)", "unanswered"),
        ("verifications started after their key's revocation (all denied)", "linearizability_checked"),
        ("acknowledged usage events lost", "batched_lost"),
        ("seed (KEYLEDGER_CRASH_SEED)", "seed"),
    ];
    let mut out = String::from("| figure | value |\n| --- | --- |\n");
    for (label, field) in rows {
        out.push_str(&format!("| {label} | {} |\n", figures[field]));
    }
    let seconds = figures["seconds"].as_f64().unwrap_or(0.0);
    out.push_str(&format!("| duration | {:.0} s |\n", seconds));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_parse_and_refuse_unknown_flags() {
        let options = parse(&args(&[])).unwrap();
        assert_eq!((options.rounds, options.seed), (DEFAULT_ROUNDS, None));
        let options = parse(&args(&["--rounds", "200", "--seed", "42"])).unwrap();
        assert_eq!((options.rounds, options.seed), (200, Some(42)));
        assert_eq!(parse(&args(&["--rounds", "0"])).unwrap().rounds, 1);
        assert!(parse(&args(&["--rounds"])).is_err());
        assert!(parse(&args(&["--rounds", "many"])).is_err());
        assert!(parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn the_table_shows_every_figure() {
        let figures =
            serde_json::json!({"rounds": 3, "usage_checked": 1234, "batched_lost": 0, "seconds": 61.4});
        let table = table(&figures);
        assert!(table.contains("| rounds survived (SIGKILL, restart, checks) | 3 |"), "{table}");
        assert!(table.contains("| 1234 |") && table.contains("| acknowledged usage events lost | 0 |"));
        assert!(table.contains("| duration | 61 s |"));
    }
}
