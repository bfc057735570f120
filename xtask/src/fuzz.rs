//! `cargo xtask fuzz [--seconds N] [--smoke] [--target T]...`: runs the cargo-fuzz targets of
//! `fuzz/` one after the other, each for a set time, and fails on any crash.
//!
//! - cargo-fuzz is installed (`cargo install cargo-fuzz --locked`) if it is missing, and the
//!   targets run on stable Rust with `RUSTC_BOOTSTRAP=1` (cargo-fuzz passes nightly flags).
//! - Each target starts from its seeds in `fuzz/corpus/<target>/` (kept in the repository,
//!   small, never written to) plus a working corpus in `target/fuzz-corpus/<target>/`, which
//!   is where libFuzzer saves what it finds, so longer local runs build on earlier ones.
//! - A crash leaves its input in `fuzz/artifacts/<target>/` and fails the run; turn it into a
//!   regression test in the crate that owns the code (a unit test with the crashing bytes).
//! - The output ends with a table of executions per target (libFuzzer's final stats); the
//!   full libFuzzer output of each target is in `target/fuzz-logs/<target>.log`.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every target of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: [&str; 5] =
    ["key_parser", "event_decoder", "signed_note", "export_verifier", "request_bodies"];

/// Seconds per target without `--seconds` / with `--smoke`.
const DEFAULT_SECONDS: u64 = 60;
const SMOKE_SECONDS: u64 = 10;

#[derive(Debug)]
pub struct Options {
    pub seconds: u64,
    pub targets: Vec<String>,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut seconds = None;
    let mut smoke = false;
    let mut targets = Vec::new();
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--smoke" => smoke = true,
            "--seconds" => {
                let value = flags.next().context("`--seconds` needs a value")?;
                seconds = Some(value.parse::<u64>().context("--seconds")?.max(1));
            }
            "--target" => {
                let value = flags.next().context("`--target` needs a value")?;
                if !TARGETS.contains(&value.as_str()) {
                    bail!("unknown fuzz target `{value}` (targets: {})", TARGETS.join(", "));
                }
                targets.push(value.clone());
            }
            other => bail!("unknown option `{other}` for `fuzz`"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let seconds = seconds.unwrap_or(if smoke { SMOKE_SECONDS } else { DEFAULT_SECONDS });
    Ok(Options { seconds, targets })
}

/// What one target's run gave.
struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    passed: bool,
}

pub fn run(root: &Path, options: Options) -> Result<()> {
    ensure_cargo_fuzz(root)?;
    let started = Instant::now();
    // One build of every target first, so each run's time is fuzzing, not compiling.
    let mut build = cargo_fuzz(root);
    build.args(["build", "--debug-assertions"]);
    crate::run_step(root, build)?;
    eprintln!("xtask: fuzz targets built in {:.0} s", started.elapsed().as_secs_f64());

    let logs = root.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for target in &options.targets {
        let work = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        let log_path = logs.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = cargo_fuzz(root);
        command
            .args(["run", "--debug-assertions", target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .stdout(Stdio::null())
            .stderr(log.try_clone()?);
        eprintln!("xtask: fuzzing {target} for {} s (log: {})", options.seconds, log_path.display());
        let begun = Instant::now();
        let status = command.current_dir(root).status().context("cannot start cargo fuzz run")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let executions = final_stat(&text, "stat::number_of_executed_units:").or_else(|| {
            text.lines().rev().find_map(|l| l.strip_prefix("Done ")?.split(' ').next()?.parse().ok())
        });
        if !status.success() {
            eprintln!("xtask: {target} FAILED ({status}); the end of its output:");
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("    {line}");
            }
            eprintln!(
                "xtask: the crashing input is in fuzz/artifacts/{target}/; add it as a regression test"
            );
        }
        outcomes.push(Outcome {
            target: target.clone(),
            seconds: begun.elapsed().as_secs_f64(),
            executions,
            passed: status.success(),
        });
    }

    eprintln!("\n{:<18} {:>8} {:>14} {:>10}  result", "target", "seconds", "executions", "exec/s");
    for o in &outcomes {
        let execs = o.executions.map_or("?".to_owned(), |e| e.to_string());
        let rate = o.executions.map_or("?".to_owned(), |e| format!("{:.0}", e as f64 / o.seconds.max(1.0)));
        let result = if o.passed { "ok" } else { "CRASH" };
        eprintln!("{:<18} {:>8.0} {:>14} {:>10}  {result}", o.target, o.seconds, execs, rate);
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.passed).map(|o| o.target.as_str()).collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    eprintln!("xtask: fuzz passed ({} targets, {:.0} s)", outcomes.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// A `stat::…: N` line of libFuzzer's `-print_final_stats=1` output.
fn final_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().rev().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// `cargo fuzz …` on stable: cargo-fuzz passes `-Z` flags, which `RUSTC_BOOTSTRAP=1` allows.
fn cargo_fuzz(root: &Path) -> Command {
    let mut command = crate::cargo();
    command.arg("fuzz").env("RUSTC_BOOTSTRAP", "1").current_dir(root);
    command
}

/// Installs cargo-fuzz if `cargo fuzz` is not available.
fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let present = crate::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing; installing it");
    let mut install = crate::cargo();
    install.args(["install", "cargo-fuzz", "--locked"]);
    crate::run_step(root, install)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options() {
        let all = parse(&[]).unwrap();
        assert_eq!((all.seconds, all.targets.len()), (DEFAULT_SECONDS, TARGETS.len()));
        assert_eq!(parse(&args(&["--smoke"])).unwrap().seconds, SMOKE_SECONDS);
        let one = parse(&args(&["--seconds", "5", "--target", "signed_note"])).unwrap();
        assert_eq!((one.seconds, one.targets), (5, vec!["signed_note".to_owned()]));
        assert!(parse(&args(&["--target", "nope"])).is_err());
        assert!(parse(&args(&["--seconds"])).is_err());
    }

    #[test]
    fn every_target_is_in_the_fuzz_manifest_with_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(manifest.contains(&format!("name = \"{target}\"")), "{target} not in fuzz/Cargo.toml");
            let seeds = std::fs::read_dir(root.join("fuzz/corpus").join(target)).unwrap().count();
            assert!(seeds > 0, "no seeds for {target}");
        }
        assert_eq!(manifest.matches("[[bin]]").count(), TARGETS.len());
    }

    #[test]
    fn reads_libfuzzer_final_stats() {
        let text = "#2\tINITED\nDone 1234 runs in 10 second(s)\nstat::number_of_executed_units: 1240\n";
        assert_eq!(final_stat(text, "stat::number_of_executed_units:"), Some(1240));
    }
}
