//! keyledger's project automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Commands:
//! - `bench [--quick] [--report-only] [--scale-events N] [--no-criterion|--no-load|--no-scale]`:
//!   every performance figure (docs/benchmarks.md) in one command: the criterion benchmarks of keyledger-core,
//!   keyledger-log and keyledger-ledger, the HTTP load test ([`load`]) and the scale figures
//!   on generated logs ([`scale_table`]), each written into its table of `docs/benchmarks.md`
//!   (see [`bench`]). `bench --store postgres` instead measures the PostgreSQL store beside the
//!   embedded one (see [`pg_bench`]).
//! - `gen-log --data-dir D --events N --keys K`, `scale --data-dir D`: write a realistic log
//!   through the engine (see [`genlog`]); time the queries on one such log, as JSON (see
//!   [`scale_measure`]). `bench` runs both, and renders their figures (see [`scale_table`]).
//! - `load [--quick|--ci] [--seconds S] [--connections C] [--keys K] [--binary PATH]`: the HTTP load test
//!   against the real `keyledger` binary, with ratios to a bare axum server (see [`load`]).
//! - `bare [--listen ADDR]`: that bare reference server (see [`bare`]).
//! - `fuzz [--seconds N] [--smoke] [--target T]...`: runs the cargo-fuzz targets of `fuzz/`
//!   for a set time each, failing on any crash (see [`fuzz`]).
//! - `crash [--rounds N] [--seed S]`: the SIGKILL crash test of `tests/crash.rs` in release
//!   mode with many rounds, ending with its figures (see [`crash`]).
//! - `test`: the whole test suite, also on a fresh machine: installs the gateways and the
//!   browsers the end-to-end tests drive, runs `cargo test --workspace`, then the console's
//!   browser tests (Chromium and Firefox). This is the README's test command, and `.ci/run` calls it.
//! - `ci`: `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`
//!   and `test`, in that order, stopping at the first failure (`.ci/run` adds the load,
//!   schemathesis and fuzz smokes).

mod bare;
mod bench;
mod crash;
mod fuzz;
mod genlog;
mod load;
mod pg_bench;
mod process;
mod report;
mod scale_measure;
mod scale_table;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  bench [--quick] [--report-only] [--scale-events N] [--no-criterion] [--no-load] [--no-scale]
        [--store postgres]
        every performance figure, each table of docs/benchmarks.md refreshed: the criterion
        benchmarks, then `load`, then the scale figures (gen-log + scale + keyledger serve
        startup and peak RSS with 100,000 and 1,000,000 keys) on logs generated under
        target/xtask-bench/ (removed afterwards)
        --quick          smoke run: short criterion times, `load --quick`, small logs
        --report-only    criterion: do not run; rebuild its table from the results on disk
                         (implies --no-load --no-scale)
        --scale-events N events of the main scale log (default 1000000; 10000000 for the
                         full table: allow about 15 minutes more and 6 GB of disk)
        --no-criterion, --no-load, --no-scale   skip that part
        --store postgres instead: the PostgreSQL store beside the embedded one, in one run
                         of about 2 minutes (PostgreSQL 15 must be installed:
                         scripts/install-postgres.sh): verify throughput and p99 with one
                         and three nodes, creates/s, revoke latency, events per database
                         transaction, bytes per event, failover time; writes the
                         `PostgreSQL store` section of docs/benchmarks.md
  gen-log --data-dir D --events N --keys K [--hot-share F] [--workspaces W]
        write a realistic log of N events over K keys straight through the engine (in
        release mode); key 0 gets F (default 0.1) of the traffic
  load [--quick | --ci] [--seconds S] [--connections C] [--keys K] [--binary PATH]
        HTTP load test (in release mode) of the real keyledger binary on loopback: bare
        axum server, /healthz, POST /v1/verify (JSON), forward-auth GET /v1/verify, then
        creates; checks that no usage event is lost; writes docs/benchmarks.md (not --ci)
        --quick        2 s per row: a smoke run, not for quoting
        --ci           3 s per row, 500 keys; fails if a verify mode's throughput is below
                       0.2x the bare server's (best of 3) or a usage event is lost
        --seconds S    measured seconds per row (default 10)
        --connections  concurrent keep-alive connections (default 32)
        --keys K       keys to verify round-robin (default 2000)
        --binary PATH  measure this keyledger binary instead of building one (before/after
                       pairs); the docs are not written
  bare [--listen ADDR]
        the constant-answer axum server `load` compares against (prints its address)
  scale --data-dir D
        time startup, the compromise report, source lookups, active_at, hygiene, export,
        export verify and log verify on a log written by gen-log (in release mode)
  fuzz [--seconds N] [--smoke] [--target T]...
        run each cargo-fuzz target of fuzz/ for N seconds (default 60) on stable
        (RUSTC_BOOTSTRAP=1), seeds from fuzz/corpus/; fails on any crash; prints the
        executions per target. Installs cargo-fuzz if it is missing.
        --smoke        10 s per target (what CI runs)
        --target T     only this target (repeatable)
  crash [--rounds N] [--seed S]
        the SIGKILL crash test (tests/crash.rs) in release mode with N rounds (default 50;
        `cargo test` runs 8): mixed load, kill -9, log verify, restart, every acknowledged
        operation checked; prints the figures (rounds, operations checked, losses); the
        whole output goes to target/crash-logs/
        --seed S       replay the test's random choices (thread interleaving still varies)
  test  the whole test suite on a fresh machine: install the gateways and the browsers the
        end-to-end tests drive (scripts/install-*.sh; needs root), cargo test --workspace,
        then the console's browser tests (node --test tests/console/: Chromium and Firefox)
  ci    cargo fmt --all --check, cargo clippy --workspace --all-targets -- -D warnings,
        cargo test --workspace (the checks of .ci/run)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    match command.as_str() {
        "bench" => {
            let options = bench::parse(rest).map_err(|e| anyhow::anyhow!("{e:#}\n\n{USAGE}"))?;
            bench::run(&workspace_root(), options)
        }
        "gen-log" => gen_log(rest),
        "scale" => {
            if cfg!(debug_assertions) {
                let mut command = cargo();
                command.args(["run", "--quiet", "--release", "--package", "xtask", "--", "scale"]).args(rest);
                return run_step(&workspace_root(), command);
            }
            match rest {
                [flag, dir] if flag == "--data-dir" => scale_measure::run(PathBuf::from(dir)),
                _ => bail!("usage: cargo xtask scale --data-dir D"),
            }
        }
        "load" => {
            let options = load::parse(rest).map_err(|e| anyhow::anyhow!("{e:#}\n\n{USAGE}"))?;
            if cfg!(debug_assertions) {
                // A debug load generator would measure itself; the same profile as the servers.
                let mut command = cargo();
                command.args(["run", "--quiet", "--release", "--package", "xtask", "--", "load"]).args(rest);
                return run_step(&workspace_root(), command);
            }
            load::run(&workspace_root(), options)
        }
        "bare" => bare::run(rest),
        "crash" => {
            let options = crash::parse(rest).map_err(|e| anyhow::anyhow!("{e:#}\n\n{USAGE}"))?;
            crash::run(&workspace_root(), options)
        }
        "fuzz" => {
            let options = fuzz::parse(rest).map_err(|e| anyhow::anyhow!("{e:#}\n\n{USAGE}"))?;
            fuzz::run(&workspace_root(), options)
        }
        "test" => {
            if let Some(extra) = rest.first() {
                bail!("`test` takes no arguments (got `{extra}`)");
            }
            test(&workspace_root())
        }
        "ci" => {
            if let Some(extra) = rest.first() {
                bail!("`ci` takes no arguments (got `{extra}`)");
            }
            ci(&workspace_root())
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// Parses `gen-log`'s flags; re-runs itself in release mode (a debug engine is ~10x slower).
fn gen_log(args: &[String]) -> Result<()> {
    if cfg!(debug_assertions) {
        let mut command = cargo();
        command.args(["run", "--quiet", "--release", "--package", "xtask", "--", "gen-log"]).args(args);
        return run_step(&workspace_root(), command);
    }
    let mut options =
        genlog::Options { data_dir: PathBuf::new(), events: 0, keys: 0, hot_share: 0.1, workspaces: None };
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        let value = flags.next().with_context(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--data-dir" => options.data_dir = PathBuf::from(value),
            "--events" => options.events = value.replace('_', "").parse().context("--events")?,
            "--keys" => options.keys = value.replace('_', "").parse().context("--keys")?,
            "--hot-share" => options.hot_share = value.parse().context("--hot-share")?,
            "--workspaces" => options.workspaces = Some(value.parse().context("--workspaces")?),
            other => bail!("unknown option `{other}` for `gen-log`\n\n{USAGE}"),
        }
    }
    if options.data_dir.as_os_str().is_empty() {
        bail!("gen-log needs --data-dir");
    }
    genlog::run(options)
}

/// Total size of the files under `path`, in bytes.
fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_owned()
}

/// The `cargo` that runs us (so toolchain overrides carry over), or the one on `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command` in `dir`, inheriting stdio, and fails unless it succeeds.
fn run_step(dir: &Path, mut command: Command) -> Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("xtask: running {shown}");
    let status = command.current_dir(dir).status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// The local CI sequence: format, lints, tests.
fn ci(root: &Path) -> Result<()> {
    let steps: [&[&str]; 2] =
        [&["fmt", "--all", "--check"], &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]];
    for args in steps {
        let mut command = cargo();
        command.args(args);
        run_step(root, command)?;
    }
    test(root)?;
    eprintln!("xtask: ci passed");
    Ok(())
}

/// The whole test suite, on a fresh machine too: installs the real gateways and the browsers
/// the end-to-end tests drive and PostgreSQL (Debian packages and registry packages; needs root), runs
/// `cargo test --workspace`, then the console's browser tests in Chromium and Firefox (a
/// missing browser fails them, it is never skipped).
fn test(root: &Path) -> Result<()> {
    for script in ["scripts/install-gateways.sh", "scripts/install-browser.sh", "scripts/install-postgres.sh"]
    {
        let mut command = Command::new("bash");
        command.arg(script);
        run_step(root, command)?;
    }
    let mut command = cargo();
    command.args(["test", "--workspace"]);
    run_step(root, command)?;
    let mut command = Command::new("node");
    command.args(["--test", "tests/console/"]);
    run_step(root, command)?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_names_the_load_smokes_floor() {
        assert!(USAGE.contains(&format!("{}x the bare server's", load::CI_MIN_RATIO)));
    }
}
