//! Writing measured figures into docs/benchmarks.md, shared by the three tables there
//! (criterion, load, scale): each table lives between its own pair of markers, and a
//! refresh replaces what is between them and nothing else.
//!
//! Also the context every table states next to its figures (when, on which machine, at
//! which commit, under what background load) and the number format they share.

use anyhow::{Context, Result, bail};
use keyledger_core::Timestamp;
use std::path::Path;
use std::process::Command;

/// The markers of one table of docs/benchmarks.md.
pub(crate) struct Section {
    pub(crate) begin: &'static str,
    pub(crate) end: &'static str,
    /// A heading put before the markers when the document has none yet.
    pub(crate) heading: Option<&'static str>,
}

/// What a document created from nothing starts with.
const NEW_DOCUMENT: &str = "# Benchmarks\n\nFigures written by `cargo xtask bench`.\n\n";

/// Replaces everything between the section's markers in `doc` with `text`; appends the
/// markers (after the section's heading, if any) when the document has neither, and creates
/// the document when it does not exist. Fails, changing nothing, if only one marker is
/// there or they are out of order.
pub(crate) fn write_section(doc: &Path, section: &Section, text: &str) -> Result<()> {
    let (begin, end) = (section.begin, section.end);
    let block = format!("{begin}\n{text}{end}");
    let current = match std::fs::read_to_string(doc) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => NEW_DOCUMENT.to_owned(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", doc.display())),
    };
    let updated = match (current.find(begin), current.find(end)) {
        (Some(at), Some(until)) if at < until => {
            format!("{}{block}{}", &current[..at], &current[until + end.len()..])
        }
        (None, None) => match section.heading {
            Some(heading) => format!("{}\n\n{heading}\n\n{block}\n", current.trim_end()),
            None => format!("{}\n\n{block}\n", current.trim_end()),
        },
        _ => bail!("{} has misplaced `{begin}` / `{end}` markers", doc.display()),
    };
    if let Some(parent) = doc.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(doc, updated).with_context(|| format!("cannot write {}", doc.display()))
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn group_digits(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub(crate) fn utc_now() -> String {
    utc_minute(Timestamp::now())
}

/// `at` as `YYYY-MM-DD HH:MM UTC` (cut from its RFC 3339 form).
fn utc_minute(at: Timestamp) -> String {
    let rfc3339 = at.to_rfc3339();
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339,
    }
}

/// `N CPUs (nproc), <model>, <memory>`.
pub(crate) fn machine_description() -> String {
    let cpus = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or_else(|_| "?".into(), |n| n.get().to_string())
    });
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok()
        })
        .map_or_else(|| "unknown memory".into(), |kib| format!("{:.1} GiB RAM", kib / 1024.0 / 1024.0));
    format!("{cpus} CPUs (`nproc`), {model}, {memory}")
}

/// `git rev-parse --short HEAD`, noting uncommitted changes to tracked files.
pub(crate) fn commit_description(root: &Path) -> String {
    let git = |args: &[&str]| {
        let mut full = vec!["-C", root.to_str().unwrap_or(".")];
        full.extend_from_slice(args);
        command_output("git", &full)
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("`{commit}` plus uncommitted changes in the working tree")
            } else {
                format!("`{commit}`")
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

/// The 1, 5 and 15-minute load averages (`/proc/loadavg`), or `?`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The trimmed stdout of a successful command.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Section = Section { begin: "<!-- t:begin -->", end: "<!-- t:end -->", heading: None };
    const HEADED: Section =
        Section { begin: "<!-- t:begin -->", end: "<!-- t:end -->", heading: Some("## Table") };

    #[test]
    fn dates_and_digits() {
        let at = |rfc3339: &str| Timestamp::parse_rfc3339(rfc3339).unwrap();
        assert_eq!(utc_minute(Timestamp::from_micros(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(at("2024-01-01T00:00:59Z")), "2024-01-01 00:00 UTC");
        assert_eq!(utc_minute(at("2024-02-29T13:45:07.5Z")), "2024-02-29 13:45 UTC");
        assert_eq!(utc_minute(at("2024-03-01T01:30:00+02:00")), "2024-02-29 23:30 UTC");
        assert_eq!(group_digits(1_234_567.8), "1,234,568");
        assert_eq!(group_digits(999.0), "999");
        assert_eq!(group_digits(1_000.0), "1,000");
        assert_eq!(group_digits(-5.0), "0");
    }

    #[test]
    fn section_is_replaced_between_markers_only() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("benchmarks.md");
        std::fs::write(&doc, "intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n").unwrap();
        write_section(&doc, &HEADED, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&doc).unwrap(),
            "intro\n<!-- t:begin -->\nnew\n<!-- t:end -->\noutro\n"
        );
    }

    #[test]
    fn missing_markers_are_appended_after_the_heading() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("benchmarks.md");
        std::fs::write(&doc, "intro\n\n").unwrap();
        write_section(&doc, &HEADED, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&doc).unwrap(),
            "intro\n\n## Table\n\n<!-- t:begin -->\nnew\n<!-- t:end -->\n"
        );
        let fresh = dir.path().join("docs/fresh.md");
        write_section(&fresh, &PLAIN, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            format!("{}\n\n<!-- t:begin -->\nnew\n<!-- t:end -->\n", NEW_DOCUMENT.trim_end())
        );
    }

    #[test]
    fn misplaced_markers_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("benchmarks.md");
        for text in ["a\n<!-- t:end -->\nb\n<!-- t:begin -->\n", "a\n<!-- t:begin -->\nb\n"] {
            std::fs::write(&doc, text).unwrap();
            assert!(write_section(&doc, &PLAIN, "new\n").is_err(), "{text:?}");
            assert_eq!(std::fs::read_to_string(&doc).unwrap(), text);
        }
    }
}
