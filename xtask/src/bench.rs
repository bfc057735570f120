//! `cargo xtask bench`: every performance figure, written into `docs/benchmarks.md`: the
//! criterion benchmarks (below), then the HTTP load test (`cargo xtask load`, its own
//! table) and the scale figures on generated logs ([`crate::scale_table`], its own table).
//! Each part can be skipped (`--no-criterion`, `--no-load`, `--no-scale`).
//!
//! Criterion steps:
//! 1. unless `--report-only`, runs `cargo bench -p keyledger-core -p keyledger-log
//!    -p keyledger-ledger --bench '*'` (only the criterion targets, so libtest never sees
//!    criterion's flags), with shorter times under `--quick`;
//! 2. reads every `<criterion home>/**/new/{benchmark,estimates}.json` written by that run
//!    (results older than the run are ignored, so a renamed benchmark never lingers), taking
//!    the mean's point estimate and 95% confidence interval, and the throughput when the
//!    benchmark declares one;
//! 3. reads the side files `<criterion home>/keyledger-extra/*.json` the append and engine
//!    benches write (events per fsync, events per write batch, checkpoints);
//! 4. replaces everything between `<!-- bench:begin -->` and `<!-- bench:end -->` in
//!    `docs/benchmarks.md` with a dated table: machine, commit, one row per benchmark with its
//!    figure, its target and whether it was met, and the command that reproduces it.
//!
//! Figures are reported as measured; a missed target is shown as missed.

use crate::report::{Section, commit_description, group_digits, machine_description, utc_now, write_section};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Packages whose benchmarks `cargo xtask bench` runs.
const PACKAGES: [&str; 3] = ["keyledger-core", "keyledger-log", "keyledger-ledger"];
/// Criterion flags of `--quick`: enough to smoke-test the benchmarks, not to quote figures.
const QUICK_ARGS: [&str; 4] = ["--warm-up-time", "0.5", "--measurement-time", "1"];
/// Where the criterion table lives in docs/benchmarks.md.
const SECTION: Section = Section { begin: "<!-- bench:begin -->", end: "<!-- bench:end -->", heading: None };
/// Directory (under the criterion home) of the benches' own side files.
const EXTRA_DIR: &str = "keyledger-extra";

/// Events of the main scale log unless `--scale-events` says otherwise.
const DEFAULT_SCALE_EVENTS: u64 = 1_000_000;

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub quick: bool,
    pub report_only: bool,
    pub criterion: bool,
    pub load: bool,
    pub scale: bool,
    pub scale_events: u64,
    /// `--store postgres`: only the PostgreSQL store's comparison ([`crate::pg_bench`]).
    pub postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            quick: false,
            report_only: false,
            criterion: true,
            load: true,
            scale: true,
            scale_events: DEFAULT_SCALE_EVENTS,
            postgres: false,
        }
    }
}

/// Parses `bench`'s flags.
pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--quick" => options.quick = true,
            "--report-only" => options.report_only = true,
            "--no-criterion" => options.criterion = false,
            "--no-load" => options.load = false,
            "--no-scale" => options.scale = false,
            "--scale-events" => {
                let value = flags.next().context("`--scale-events` needs a value")?;
                options.scale_events = value.replace('_', "").parse().context("--scale-events")?;
                if options.scale_events == 0 {
                    bail!("--scale-events must be positive");
                }
            }
            "--store" => match flags.next().map(String::as_str) {
                Some("postgres") => options.postgres = true,
                Some("embedded") => {}
                _ => bail!("`--store` takes `postgres` (or `embedded`, the default)"),
            },
            other => bail!("unknown option `{other}` for `bench`"),
        }
    }
    if options.report_only {
        (options.load, options.scale) = (false, false);
    }
    Ok(options)
}

/// A benchmark group: the package and bench target it lives in, and what one iteration is.
struct Group {
    name: &'static str,
    package: &'static str,
    bench: &'static str,
    /// What one criterion iteration counts, for the throughput column ("events", …).
    unit: &'static str,
}

const GROUPS: &[Group] = &[
    Group { name: "secret", package: "keyledger-core", bench: "keys_codec", unit: "checks" },
    Group { name: "pepper", package: "keyledger-core", bench: "keys_codec", unit: "hashes" },
    Group { name: "codec", package: "keyledger-core", bench: "keys_codec", unit: "events" },
    Group { name: "append", package: "keyledger-log", bench: "log_store", unit: "events" },
    Group { name: "proofs", package: "keyledger-log", bench: "log_store", unit: "proofs" },
    Group { name: "log_verify", package: "keyledger-log", bench: "log_store", unit: "events" },
    Group { name: "ledger", package: "keyledger-ledger", bench: "ledger_verify", unit: "decisions" },
    Group { name: "engine_verify", package: "keyledger-ledger", bench: "ledger_verify", unit: "verifies" },
    Group { name: "projection", package: "keyledger-ledger", bench: "audit_projection", unit: "events" },
    Group { name: "import_lookup", package: "keyledger-ledger", bench: "ledger_verify", unit: "lookups" },
];

/// One condition a figure is held to.
#[derive(Clone, Copy)]
enum Check {
    /// The mean time per iteration must not exceed `nanos`.
    MeanAtMost { nanos: f64, label: &'static str },
    /// The throughput (iterations' elements per second) must reach `per_second`.
    RateAtLeast { per_second: f64, label: &'static str },
}

/// A benchmark this project expects, in table order, and its targets (if any).
struct Expected {
    id: &'static str,
    checks: &'static [Check],
}

const EXPECTED: &[Expected] = &[
    Expected { id: "secret/check", checks: &[] },
    Expected { id: "pepper/hash", checks: &[] },
    Expected { id: "codec/encode_used", checks: &[] },
    Expected { id: "codec/decode_used", checks: &[] },
    Expected { id: "append/written/1", checks: &[] },
    Expected { id: "append/written/8", checks: &[] },
    Expected { id: "append/written/64", checks: &[] },
    Expected { id: "append/synced/64", checks: &[] },
    Expected {
        id: "proofs/inclusion_1m",
        checks: &[Check::MeanAtMost { nanos: 50_000.0, label: "< 50 µs" }],
    },
    Expected { id: "proofs/consistency_1m", checks: &[] },
    Expected {
        id: "log_verify/200k_events",
        checks: &[
            Check::RateAtLeast { per_second: 300_000.0, label: "≥ 300,000 events/s" },
            Check::RateAtLeast { per_second: 500_000.0, label: "performance target: ≥ 500,000 events/s" },
        ],
    },
    Expected { id: "ledger/decide", checks: &[Check::MeanAtMost { nanos: 2_000.0, label: "≤ 2 µs" }] },
    Expected { id: "engine_verify/batched/1", checks: &[] },
    Expected {
        id: "engine_verify/batched/64",
        checks: &[Check::RateAtLeast { per_second: 300_000.0, label: "≥ 300,000 verifies/s" }],
    },
    Expected { id: "engine_verify/task/1", checks: &[] },
    Expected { id: "engine_verify/task/64", checks: &[] },
    Expected { id: "projection/audit_usage_45k", checks: &[] },
    Expected { id: "import_lookup/native_hit/0", checks: &[] },
    Expected { id: "import_lookup/native_hit/100000", checks: &[] },
    Expected { id: "import_lookup/native_miss/0", checks: &[] },
    Expected { id: "import_lookup/native_miss/100000", checks: &[] },
];

/// One benchmark's result as criterion recorded it.
#[derive(Debug, Clone)]
struct Measured {
    id: String,
    /// Mean time per iteration, in nanoseconds, and its 95% confidence interval.
    mean_ns: f64,
    mean_low_ns: f64,
    mean_high_ns: f64,
    /// Elements per iteration, when the benchmark declared a throughput.
    elements: Option<f64>,
}

impl Measured {
    fn per_second(&self) -> Option<f64> {
        self.elements.map(|n| n * 1e9 / self.mean_ns)
    }
}

/// Runs every selected part, each refreshing its table of `docs/benchmarks.md`.
pub fn run(root: &Path, options: Options) -> Result<()> {
    if options.postgres {
        if cfg!(debug_assertions) {
            // A debug load generator would measure itself; the same profile as the servers.
            let mut command = crate::cargo();
            command.args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "xtask",
                "--",
                "bench",
                "--store",
                "postgres",
            ]);
            if options.quick {
                command.arg("--quick");
            }
            return crate::run_step(root, command);
        }
        return crate::pg_bench::run(root, options.quick);
    }
    if options.criterion {
        run_criterion(root, options)?;
    }
    if options.load {
        let mut command = crate::cargo();
        command.args(["run", "--quiet", "--release", "--package", "xtask", "--", "load"]);
        if options.quick {
            command.arg("--quick");
        }
        crate::run_step(root, command)?;
    }
    if options.scale {
        let sizes = if options.quick {
            crate::scale_table::Sizes::quick()
        } else {
            crate::scale_table::Sizes::full(options.scale_events)
        };
        crate::scale_table::run(root, sizes, options.quick)?;
    }
    Ok(())
}

/// Runs the criterion benchmarks (unless `report_only`) and refreshes their table.
fn run_criterion(root: &Path, options: Options) -> Result<()> {
    let home = criterion_home(root);
    let started = SystemTime::now();
    if !options.report_only {
        let extra = home.join(EXTRA_DIR);
        if extra.exists() {
            std::fs::remove_dir_all(&extra).with_context(|| format!("cannot clear {}", extra.display()))?;
        }
        let mut command = crate::cargo();
        command.arg("bench");
        for package in PACKAGES {
            command.args(["-p", package]);
        }
        command.args(["--bench", "*"]);
        if options.quick {
            command.arg("--").args(QUICK_ARGS);
        }
        crate::run_step(root, command)?;
    }
    // A result counts if written by this run (allowing for coarse file timestamps).
    let fresh_since = (!options.report_only).then(|| started - Duration::from_secs(2));
    let measured = collect_results(&home, fresh_since)?;
    if measured.is_empty() {
        bail!("no criterion results found under {}", home.display());
    }
    let extras = collect_extras(&home.join(EXTRA_DIR))?;
    let section =
        render_section(&measured, &extras, &machine_description(), &commit_description(root), options);
    print!("{section}");
    let doc = root.join("docs/benchmarks.md");
    write_section(&doc, &SECTION, &section)?;
    eprintln!("xtask: wrote {}", doc.display());
    Ok(())
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion/` in the target dir.
fn criterion_home(root: &Path) -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return root.join(home);
    }
    crate::process::target_dir(root).join("criterion")
}

/// Every `new/` result under `home` (written after `fresh_since`, when given), by id.
fn collect_results(home: &Path, fresh_since: Option<SystemTime>) -> Result<BTreeMap<String, Measured>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![home.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
        };
        for entry in entries {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            if !path.is_dir() {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "new" {
                if let Some(result) = read_result(&path, fresh_since)? {
                    found.insert(result.id.clone(), result);
                }
            } else if !matches!(name, "base" | "change" | "report" | EXTRA_DIR) {
                pending.push(path);
            }
        }
    }
    Ok(found)
}

/// One benchmark's `new/` directory, or `None` if incomplete or older than `fresh_since`.
fn read_result(dir: &Path, fresh_since: Option<SystemTime>) -> Result<Option<Measured>> {
    let (benchmark_path, estimates_path) = (dir.join("benchmark.json"), dir.join("estimates.json"));
    if !benchmark_path.is_file() || !estimates_path.is_file() {
        return Ok(None);
    }
    if let Some(since) = fresh_since {
        let modified = std::fs::metadata(&estimates_path)
            .and_then(|meta| meta.modified())
            .with_context(|| format!("cannot stat {}", estimates_path.display()))?;
        if modified < since {
            return Ok(None);
        }
    }
    let benchmark = read_json(&benchmark_path)?;
    let estimates = read_json(&estimates_path)?;
    let id = benchmark["full_id"]
        .as_str()
        .with_context(|| format!("{} has no full_id", benchmark_path.display()))?
        .to_owned();
    let number = |value: &Value, what: &str| {
        value.as_f64().with_context(|| format!("{} has no {what}", estimates_path.display()))
    };
    let mean = &estimates["mean"];
    let elements = benchmark["throughput"]["Elements"].as_f64();
    Ok(Some(Measured {
        id,
        mean_ns: number(&mean["point_estimate"], "mean.point_estimate")?,
        mean_low_ns: number(&mean["confidence_interval"]["lower_bound"], "mean lower bound")?,
        mean_high_ns: number(&mean["confidence_interval"]["upper_bound"], "mean upper bound")?,
        elements,
    }))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The benches' side files, by benchmark id.
fn collect_extras(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let mut extras = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(extras) };
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let value = read_json(&path)?;
            if let Some(id) = value["id"].as_str() {
                extras.insert(id.to_owned(), value);
            }
        }
    }
    Ok(extras)
}

/// The markdown between the markers: heading, context lines and the table.
fn render_section(
    measured: &BTreeMap<String, Measured>,
    extras: &BTreeMap<String, Value>,
    machine: &str,
    commit: &str,
    options: Options,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Results of {}", utc_now());
    let _ = writeln!(out);
    let _ = writeln!(out, "- Machine: {machine}; shared with other work while measuring.");
    let _ = writeln!(out, "- Commit: {commit}.");
    let settings = if options.quick {
        "`cargo xtask bench --quick` (criterion warm-up 0.5 s, measurement 1 s: a smoke run, not for quoting)"
    } else {
        "`cargo xtask bench` (criterion warm-up 1 s, measurement 3 s per benchmark)"
    };
    let _ = writeln!(out, "- Run with {settings}.");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Benchmark | Mean time (95% CI) | Throughput | Target | Result | Writer stats | Reproduce |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    let mut rows: Vec<(&str, &[Check])> = EXPECTED.iter().map(|e| (e.id, e.checks)).collect();
    let unlisted: Vec<&String> =
        measured.keys().filter(|id| !EXPECTED.iter().any(|e| e.id == id.as_str())).collect();
    rows.extend(unlisted.iter().map(|id| (id.as_str(), &[] as &[Check])));
    for (id, checks) in rows {
        let group = id.split('/').next().and_then(|name| GROUPS.iter().find(|g| g.name == name));
        let reproduce = match group {
            Some(g) => format!("`cargo bench -p {} --bench {} -- --exact {id}`", g.package, g.bench),
            None => format!("`cargo bench -- --exact {id}`"),
        };
        let target = if checks.is_empty() {
            "—".to_owned()
        } else {
            checks.iter().map(|c| check_label(*c)).collect::<Vec<_>>().join("; ")
        };
        let Some(result) = measured.get(id) else {
            let _ = writeln!(out, "| `{id}` | not measured in this run | | {target} | | | {reproduce} |");
            continue;
        };
        let time = format!(
            "{} ({}–{})",
            format_nanos(result.mean_ns),
            format_nanos(result.mean_low_ns),
            format_nanos(result.mean_high_ns)
        );
        let unit = group.map_or("elements", |g| g.unit);
        let rate = result.per_second().map_or_else(|| "—".to_owned(), |r| format_rate(r, unit));
        let verdict = if checks.is_empty() {
            "—".to_owned()
        } else {
            checks.iter().map(|c| check_verdict(*c, result)).collect::<Vec<_>>().join("; ")
        };
        let stats = extras.get(id).map_or_else(|| "—".to_owned(), writer_stats);
        let _ = writeln!(out, "| `{id}` | {time} | {rate} | {target} | {verdict} | {stats} | {reproduce} |");
    }
    out
}

fn check_label(check: Check) -> String {
    match check {
        Check::MeanAtMost { label, .. } | Check::RateAtLeast { label, .. } => label.to_owned(),
    }
}

/// "met" or "**missed**" for one check, with the measured figure when missed.
fn check_verdict(check: Check, result: &Measured) -> String {
    match check {
        Check::MeanAtMost { nanos, .. } if result.mean_ns <= nanos => "met".into(),
        Check::MeanAtMost { nanos, .. } => {
            format!("**missed** ({} > {})", format_nanos(result.mean_ns), format_nanos(nanos))
        }
        Check::RateAtLeast { per_second, label } => match result.per_second() {
            Some(rate) if rate >= per_second => {
                if label.starts_with("performance target") {
                    format!("{}: met", target_of(label))
                } else {
                    "met".into()
                }
            }
            Some(rate) => {
                let prefix = if label.starts_with("performance target") {
                    format!("{}: ", target_of(label))
                } else {
                    String::new()
                };
                format!("{prefix}**missed** ({} < {})", group_digits(rate), group_digits(per_second))
            }
            None => "no throughput recorded".into(),
        },
    }
}

/// "performance target" from "performance target: …".
fn target_of(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

/// The side file's figures: events per fsync, per write batch, checkpoints signed.
fn writer_stats(extra: &Value) -> String {
    let per_fsync = extra["events_per_fsync"].as_f64().unwrap_or(f64::NAN);
    let fsyncs = extra["fsyncs"].as_u64().unwrap_or(0);
    let per_batch = extra["events_per_batch"].as_f64().unwrap_or(f64::NAN);
    let checkpoints = extra["checkpoints"].as_u64().unwrap_or(0);
    format!(
        "{per_fsync:.1} events/fsync over {} fsyncs; {per_batch:.1} events/write; {} checkpoints",
        group_digits(fsyncs as f64),
        group_digits(checkpoints as f64)
    )
}

/// A duration in nanoseconds, with a unit that keeps 3–4 significant digits.
fn format_nanos(nanos: f64) -> String {
    match nanos {
        n if n < 1e3 => format!("{n:.1} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

/// A rate per second: grouped digits below a million, `x.xx M` above.
fn format_rate(per_second: f64, unit: &str) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M {unit}/s", per_second / 1e6)
    } else {
        format!("{} {unit}/s", group_digits(per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_are_formatted() {
        assert_eq!(format_nanos(14_208.0), "14.21 µs");
        assert_eq!(format_nanos(812.34), "812.3 ns");
        assert_eq!(format_rate(744_657.2, "events"), "744,657 events/s");
        assert_eq!(format_rate(2_500_000.0, "checks"), "2.50 M checks/s");
    }

    #[test]
    fn every_expected_benchmark_has_a_group_to_reproduce_it_with() {
        for expected in EXPECTED {
            let group = expected.id.split('/').next();
            assert!(
                GROUPS.iter().any(|g| Some(g.name) == group),
                "{}: no group names its package and bench target",
                expected.id
            );
        }
    }

    #[test]
    fn store_flag() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert!(parse(&args("--store postgres --quick")).unwrap().postgres);
        assert!(!parse(&args("--store embedded")).unwrap().postgres);
        assert!(parse(&args("--store mysql")).is_err());
        assert!(parse(&args("--store")).is_err());
    }
}
