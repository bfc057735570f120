//! The child processes of the measuring commands (`load`, and the scale part of `bench`):
//! servers under test, started and always stopped again, and the few facts about the
//! build and the machine they need (where cargo builds, a free loopback port, the end of a
//! server's log).
//!
//! Guarantee: a [`Process`] never outlives the harness that started it. It runs in its own
//! process group, which is stopped (SIGTERM, then SIGKILL) when the value is dropped, on
//! success, error or panic; and under `timeout` when available, so it also stops by itself
//! after its lifetime if the harness is killed outright.

use anyhow::{Context, Result};
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to stop cleanly after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a log file [`tail`] keeps.
const TAIL_LINES: usize = 15;

/// The target directory cargo builds into.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// A child process in its own process group, stopped (the whole group: SIGTERM, then
/// SIGKILL after 10 s) when dropped. It runs under `timeout` when available, so it stops
/// by itself after `lifetime` even if this harness is killed outright.
pub(crate) struct Process {
    name: String,
    child: Child,
    stopped: bool,
}

impl Process {
    /// Starts `program args` with stdin closed, stdout piped (see [`Process::take_stdout`])
    /// and stderr as given.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        lifetime: Duration,
        stderr: Stdio,
    ) -> Result<Self> {
        let mut command = if has_timeout() {
            let mut command = Command::new("timeout");
            // `timeout` arms its kill-after on any SIGTERM it receives, [`Process::stop`]'s
            // included: longer than the grace, so that the grace is what a stop gets.
            let kill_after = STOP_GRACE + Duration::from_secs(5);
            command
                .arg(format!("--kill-after={}", kill_after.as_secs()))
                .arg(format!("{}s", lifetime.as_secs().max(1)))
                .arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
        let child = command.spawn().with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self { name: name.to_owned(), child, stopped: false })
    }

    /// The process's stdout, the first time it is asked for.
    pub(crate) fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    fn signal_group(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([signal, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The id of the program itself (not of the `timeout` wrapping it), once it runs.
    pub(crate) fn program_pid(&self) -> u32 {
        let id = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        children.split_whitespace().next().and_then(|pid| pid.parse().ok()).unwrap_or(id)
    }

    /// Whether it has exited (and how), without waiting.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the process group: SIGTERM, up to 10 s for a clean stop, then SIGKILL.
    pub(crate) fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return self.exited();
        }
        self.stopped = true;
        self.signal_group("-TERM");
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                // The group may still hold a straggler (the server under `timeout`).
                self.signal_group("-KILL");
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("xtask: {} did not stop within 10 s of SIGTERM; killing it", self.name);
        self.signal_group("-KILL");
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether coreutils' `timeout` can be run.
fn has_timeout() -> bool {
    Command::new("timeout")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, for error messages (empty if it cannot be read).
pub(crate) fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    last_lines(&text, TAIL_LINES)
}

/// The last `n` lines of `text`, joined by newlines.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = tail(&log);
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("line 6\n") && tail.ends_with("line 20"), "{tail}");
        assert_eq!(last_lines("a\nb", 15), "a\nb");
        assert_eq!(super::tail(&dir.path().join("missing.log")), "");
    }

    #[test]
    fn a_dropped_process_is_stopped() {
        let sleep = Path::new("/bin/sleep");
        if !sleep.is_file() {
            return;
        }
        let process =
            Process::spawn("sleep", sleep, &["30"], Duration::from_secs(60), Stdio::null()).unwrap();
        let pid = process.program_pid();
        drop(process);
        // Gone from /proc, or a zombie waiting for its reaper: either way no longer running.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.split_whitespace().nth(2).map(str::to_owned));
        assert!(
            matches!(state.as_deref(), None | Some("Z")),
            "process {pid} survived its Process: {state:?}"
        );
    }
}
