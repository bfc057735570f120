//! The scale table of docs/benchmarks.md, the last part of `cargo xtask bench`: the targets
//! of docs/benchmarks.md that need a big log, measured on logs generated for the run. It drives the other
//! commands: `gen-log` writes each log, `scale` ([`crate::scale_measure`], one log, JSON out)
//! times the queries on it, `keyledger serve` is started on it for startup and memory; this
//! module turns their figures into the table, each row with its target.
//!
//! Steps (release builds; every generated data dir lives under `target/xtask-bench/` and is
//! removed at the end, whatever happens):
//! 1. `gen-log --events N --keys 100000 --hot-share 0.1` (N = `--scale-events`, default
//!    1,000,000; 10,000,000 for the full table), then `xtask scale` on it: compromise report,
//!    source lookups, export and its verification, `log verify`, bytes per event;
//! 2. `keyledger serve` on that log, restarted 3 times (clean stops): startup to the first
//!    verification answered over HTTP (median), and the server's peak RSS (`VmHWM`);
//! 3. `gen-log --events 300000 --keys 100000 --workspaces 1`, then `xtask scale`:
//!    `active_at` and hygiene over one workspace of 100,000 keys;
//! 4. `gen-log --events 1100000 --keys 1000000`, then `keyledger serve` on it: peak RSS and
//!    startup with one million keys;
//! 5. writes the table between `<!-- scale:begin -->` and `<!-- scale:end -->`.
//!
//! `--quick` shrinks every log (a smoke run of the harness, not for quoting).

use crate::process::{Process, free_port, tail, target_dir};
use crate::report::{
    Section, commit_description, group_digits, load_average, machine_description, utc_now, write_section,
};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the scale table lives in docs/benchmarks.md.
const SECTION: Section = Section { begin: "<!-- scale:begin -->", end: "<!-- scale:end -->", heading: None };

/// Sizes of the logs the scale figures are measured on.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Events of the main log (100,000 keys).
    pub events: u64,
    pub keys: u64,
    /// Keys of the one-workspace log (`active_at`).
    pub workspace_keys: u64,
    /// Keys of the memory log (one million in the full run).
    pub memory_keys: u64,
}

impl Sizes {
    pub fn full(events: u64) -> Self {
        Self { events, keys: 100_000, workspace_keys: 100_000, memory_keys: 1_000_000 }
    }

    pub fn quick() -> Self {
        Self { events: 100_000, keys: 10_000, workspace_keys: 10_000, memory_keys: 50_000 }
    }
}

/// What `keyledger serve` showed on one data dir.
#[derive(Debug, Clone, Copy)]
struct Served {
    /// Median over the restarts, milliseconds.
    startup_ms: f64,
    /// Largest `VmHWM` over the restarts, MiB.
    peak_rss_mb: f64,
}

/// A target and whether a figure meets it.
enum Target {
    AtMost(f64),
    AtLeast(f64),
    None,
}

impl Target {
    fn verdict(&self, value: f64) -> &'static str {
        match self {
            Target::AtMost(limit) if value <= *limit => "met",
            Target::AtLeast(floor) if value >= *floor => "met",
            Target::None => "—",
            _ => "**missed**",
        }
    }
}

struct Row {
    figure: String,
    target: &'static str,
    measured: String,
    result: &'static str,
    reproduce: String,
}

/// Runs the scale steps and writes their section of `docs/benchmarks.md`.
pub fn run(root: &Path, sizes: Sizes, quick: bool) -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--package", "keyledger", "--package", "xtask"]);
    crate::run_step(root, build)?;
    let release = target_dir(root).join("release");
    let (xtask, keyledger) = (release.join("xtask"), release.join("keyledger"));
    let work = target_dir(root).join("xtask-bench");
    let _cleanup = RemoveOnDrop(work.clone());
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let load_before = load_average();
    let started = Instant::now();

    let main = work.join("main");
    let main_args = gen_args(sizes.events, sizes.keys, None);
    gen_log(&xtask, &main, &main_args)?;
    let main_scale = scale(&xtask, &main)?;
    let served = serve(&keyledger, &main, 3)?;
    remove(&main)?;

    let one = work.join("one-workspace");
    let one_args = gen_args(sizes.workspace_keys * 3, sizes.workspace_keys, Some(1));
    gen_log(&xtask, &one, &one_args)?;
    let one_scale = scale(&xtask, &one)?;
    remove(&one)?;

    let many = work.join("memory");
    let many_args = gen_args(sizes.memory_keys + sizes.memory_keys / 10, sizes.memory_keys, None);
    gen_log(&xtask, &many, &many_args)?;
    let many_served = serve(&keyledger, &many, 1)?;
    remove(&many)?;

    let load_after = load_average();
    let rows = rows(&main_scale, served, &one_scale, many_served, sizes, [&main_args, &one_args, &many_args]);
    let section = render(&rows, quick, &load_before, &load_after, started.elapsed(), root);
    print!("{section}");
    let doc = root.join("docs/benchmarks.md");
    write_section(&doc, &SECTION, &section)?;
    eprintln!("xtask: wrote {}", doc.display());
    Ok(())
}

/// Removes a directory when dropped (the generated logs are gigabytes).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// `gen-log`'s arguments after `--data-dir D`.
fn gen_args(events: u64, keys: u64, workspaces: Option<u64>) -> Vec<String> {
    let mut args = vec!["--events".to_owned(), events.to_string(), "--keys".to_owned(), keys.to_string()];
    match workspaces {
        Some(w) => args.extend(["--workspaces".to_owned(), w.to_string()]),
        None => args.extend(["--hot-share".to_owned(), "0.1".to_owned()]),
    }
    args
}

fn gen_log(xtask: &Path, dir: &Path, args: &[String]) -> Result<()> {
    let mut command = Command::new(xtask);
    command.arg("gen-log").arg("--data-dir").arg(dir).args(args).stdout(Stdio::null());
    crate::run_step(Path::new("."), command)
}

/// `xtask scale --data-dir D`'s JSON.
fn scale(xtask: &Path, dir: &Path) -> Result<Value> {
    eprintln!("xtask: running {} scale --data-dir {}", xtask.display(), dir.display());
    let output = Command::new(xtask)
        .arg("scale")
        .arg("--data-dir")
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run xtask scale")?;
    if !output.status.success() {
        bail!("xtask scale failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).context("xtask scale printed no JSON")
}

/// Starts `keyledger serve` on `dir` `restarts` times (each stopped cleanly): the time from
/// spawning it to the first answered `POST /v1/verify`, and its peak RSS by then plus 2 s.
fn serve(keyledger: &Path, dir: &Path, restarts: usize) -> Result<Served> {
    let data = dir.to_str().context("data dir path is not UTF-8")?;
    let log_path = dir.with_extension("serve.log");
    let (mut startups, mut peak_kb) = (Vec::new(), 0u64);
    for _ in 0..restarts {
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let listen = address.to_string();
        let log = std::fs::File::create(&log_path).context("cannot create the server log")?;
        let started = Instant::now();
        let mut process = Process::spawn(
            "keyledger serve",
            keyledger,
            &["serve", "--data-dir", data, "--listen", &listen],
            Duration::from_secs(600),
            Stdio::from(log),
        )?;
        loop {
            if process.exited().is_some() {
                bail!("keyledger serve exited at start:\n{}", tail(&log_path));
            }
            if first_verify(address).is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("keyledger serve did not answer within 300 s:\n{}", tail(&log_path));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        startups.push(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(2));
        peak_kb = peak_kb.max(status_kb(process.program_pid(), "VmHWM:").context("no VmHWM")?);
        match process.stop() {
            Some(status) if status.success() => {}
            other => bail!("keyledger serve did not stop cleanly ({other:?}):\n{}", tail(&log_path)),
        }
    }
    let _ = std::fs::remove_file(&log_path);
    startups.sort_by(f64::total_cmp);
    Ok(Served { startup_ms: startups[startups.len() / 2], peak_rss_mb: peak_kb as f64 / 1024.0 })
}

/// The status of a `POST /v1/verify` of a well-formed but unknown key (`None` if nothing
/// answers yet). The server listens only once its registry is loaded.
fn first_verify(address: SocketAddr) -> Option<u16> {
    let body = r#"{"key":"kl_live_0000000000000000000000000000000000000000000000000"}"#;
    let request = format!(
        "POST /v1/verify HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn number(value: &Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or(f64::NAN)
}

fn rows(
    scale: &Value,
    served: Served,
    one: &Value,
    many: Served,
    sizes: Sizes,
    args: [&[String]; 3],
) -> Vec<Row> {
    let group = group_digits;
    let [main_args, one_args, many_args] = args.map(|a| a.join(" "));
    let gen_scale = |args: &str| {
        format!("`cargo xtask gen-log --data-dir D {args}` then `cargo xtask scale --data-dir D`")
    };
    let main_repro = gen_scale(&main_args);
    let one_repro = gen_scale(&one_args);
    let serve_repro = |args: &str| {
        format!(
            "`cargo xtask gen-log --data-dir D {args}`, `keyledger serve --data-dir D`, first `POST /v1/verify`, `VmHWM` of `/proc/PID/status`"
        )
    };
    let events = group(number(scale, "events"));
    let mut rows = Vec::new();
    let mut push = |figure: String,
                    target: &'static str,
                    check: Target,
                    value: f64,
                    measured: String,
                    reproduce: &str| {
        rows.push(Row {
            figure,
            target,
            measured,
            result: check.verdict(value),
            reproduce: reproduce.to_owned(),
        });
    };
    let ms = |v: f64| format!("{v:.2} ms");
    let hot = group(number(scale, "hot_key_uses"));
    for (field, what) in
        [("compromise_report_whole_life_ms", "whole life"), ("compromise_report_last_day_ms", "last day")]
    {
        let v = number(scale, field);
        push(
            format!("compromise report, key with {hot} uses, {what} ({events} events)"),
            "< 100 ms",
            Target::AtMost(100.0),
            v,
            ms(v),
            &main_repro,
        );
    }
    for (field, what) in [("source_lookup_single_ms", "one address"), ("source_lookup_cidr16_ms", "a /16")] {
        let v = number(scale, field);
        push(format!("source lookup, {what}"), "< 50 ms", Target::AtMost(50.0), v, ms(v), &main_repro);
    }
    let v = number(one, "active_at_ms");
    let active = group(number(one, "active_at_keys"));
    push(
        format!(
            "`active_at` over one workspace of {} keys ({active} active)",
            group(sizes.workspace_keys as f64)
        ),
        "< 1 s",
        Target::AtMost(1_000.0),
        v,
        ms(v),
        &one_repro,
    );
    let v = number(one, "hygiene_ms");
    push("hygiene over that workspace".into(), "—", Target::None, v, ms(v), &one_repro);
    let v = number(scale, "compliance_report_quarter_ms");
    push(
        format!(
            "compliance report of the busiest workspace, a quarter ({events} events; docs/compliance.md)"
        ),
        "< 10 s",
        Target::AtMost(10_000.0),
        v,
        ms(v),
        &main_repro,
    );
    let v = number(scale, "export_lines_per_s");
    let peak = number(scale, "rss_peak_mb");
    push(
        format!("export, unfiltered, {} lines", group(number(scale, "export_lines"))),
        "≥ 200,000 lines/s, flat memory",
        Target::AtLeast(200_000.0),
        v,
        format!("{} lines/s; peak RSS of the whole process {peak:.0} MB", group(v)),
        &main_repro,
    );
    let v = number(scale, "export_verify_lines_per_s");
    push(
        "`export verify` of that file".into(),
        "≥ 200,000 lines/s",
        Target::AtLeast(200_000.0),
        v,
        format!("{} lines/s", group(v)),
        &main_repro,
    );
    let v = number(scale, "log_verify_events_per_s");
    push(
        "`log verify`".into(),
        "≥ 500,000 events/s",
        Target::AtLeast(500_000.0),
        v,
        format!("{} events/s", group(v)),
        &main_repro,
    );
    let v = served.startup_ms;
    push(
        format!(
            "`serve` startup to first verify, clean restart, {events} events, {} keys (median of 3)",
            group(sizes.keys as f64)
        ),
        "< 2 s",
        Target::AtMost(2_000.0),
        v,
        ms(v),
        &serve_repro(&main_args),
    );
    let v = served.peak_rss_mb;
    push(
        format!("`serve` peak RSS, {} keys", group(sizes.keys as f64)),
        "—",
        Target::None,
        v,
        format!("{v:.0} MB"),
        &serve_repro(&main_args),
    );
    let v = many.peak_rss_mb;
    push(
        format!("`serve` peak RSS, {} keys", group(sizes.memory_keys as f64)),
        "1M keys: < 600 MB",
        if sizes.memory_keys >= 1_000_000 { Target::AtMost(600.0) } else { Target::None },
        v,
        format!("{v:.0} MB"),
        &serve_repro(&many_args),
    );
    let v = many.startup_ms;
    push(
        format!("`serve` startup to first verify, {} keys", group(sizes.memory_keys as f64)),
        "—",
        Target::None,
        v,
        ms(v),
        &serve_repro(&many_args),
    );
    let v = number(scale, "bytes_per_event");
    push(
        "bytes on disk per event, indexes included".into(),
        "< 400 B",
        Target::AtMost(400.0),
        v,
        format!("{v:.0} B"),
        &main_repro,
    );
    rows
}

fn render(
    rows: &[Row],
    quick: bool,
    load_before: &str,
    load_after: &str,
    took: Duration,
    root: &Path,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Scale figures of {}", utc_now());
    let _ = writeln!(out);
    let _ = writeln!(out, "- Machine: {}; shared with other work while measuring.", machine_description());
    let _ = writeln!(out, "- Commit: {}.", commit_description(root));
    let how = if quick {
        "`cargo xtask bench --quick` (small logs: a smoke run of the harness, not for quoting)"
    } else {
        "`cargo xtask bench` (release builds; each query the median of 3–5 runs)"
    };
    let _ = writeln!(
        out,
        "- Run with {how}; {:.0} s in all. Load average before / after: {load_before} / {load_after}.",
        took.as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| Figure | Target | Measured | Result | Reproduce |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.figure, row.target, row.measured, row.result, row.reproduce
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_judge_figures() {
        assert_eq!(Target::AtMost(100.0).verdict(99.9), "met");
        assert_eq!(Target::AtMost(100.0).verdict(100.1), "**missed**");
        assert_eq!(Target::AtLeast(200_000.0).verdict(199_999.0), "**missed**");
        assert_eq!(Target::AtLeast(200_000.0).verdict(250_000.0), "met");
        assert_eq!(
            Target::AtMost(1.0).verdict(f64::NAN),
            "**missed**",
            "a missing figure never meets a target"
        );
        assert_eq!(Target::None.verdict(5.0), "—");
    }

    #[test]
    fn every_scale_figure_has_a_row_with_its_target() {
        let scale = serde_json::json!({
            "events": 1_000_000, "hot_key_uses": 99_000, "compromise_report_whole_life_ms": 12.0,
            "compromise_report_last_day_ms": 140.0, "source_lookup_single_ms": 0.4,
            "source_lookup_cidr16_ms": 0.7, "compliance_report_quarter_ms": 2_500.0, "export_lines": 1_000_001, "export_lines_per_s": 150_000.0,
            "rss_peak_mb": 150.0, "export_verify_lines_per_s": 210_000.0,
            "log_verify_events_per_s": 800_000.0, "bytes_per_event": 450.0,
        });
        let one = serde_json::json!({"active_at_ms": 180.0, "active_at_keys": 90_000, "hygiene_ms": 30.0});
        let served = Served { startup_ms: 900.0, peak_rss_mb: 120.0 };
        let many = Served { startup_ms: 5_000.0, peak_rss_mb: 420.0 };
        let args = gen_args(1, 1, None);
        let rows = rows(&scale, served, &one, many, Sizes::full(1_000_000), [&args, &args, &args]);
        let find = |text: &str| {
            rows.iter().find(|r| r.figure.contains(text)).unwrap_or_else(|| panic!("no row {text}"))
        };
        assert_eq!(find("last day").result, "**missed**");
        assert_eq!(find("whole life").result, "met");
        assert_eq!(find("export, unfiltered").result, "**missed**");
        assert_eq!(find("`export verify`").result, "met");
        assert_eq!(find("compliance report of the busiest workspace").result, "met");
        assert_eq!(find("startup to first verify, clean").result, "met");
        assert_eq!(find("peak RSS, 1,000,000 keys").result, "met");
        assert_eq!(find("bytes on disk").result, "**missed**");
        assert!(find("`active_at`").figure.contains("100,000 keys"));
        assert!(rows.iter().all(|r| r.reproduce.contains("cargo xtask gen-log")));
        let text = render(&rows, false, "0.1", "0.2", Duration::from_secs(3), Path::new("."));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| Figure") && !l.starts_with("| ---"))
                .count(),
            rows.len()
        );
    }
}
