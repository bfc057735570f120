//! Throwaway PostgreSQL clusters for tests (feature `testing`).
//!
//! [`TestCluster::start`] runs `initdb` and `postgres` from Debian's packages
//! (`scripts/install-postgres.sh` installs them) in a fresh directory, listening on
//! 127.0.0.1 at a free port. PostgreSQL refuses to run as root, so when the tests run as
//! root the cluster runs as the `postgres` user. The cluster is stopped (immediate
//! shutdown) and its directory removed on drop.
//!
//! The failover tests need more than one server: [`SyncPair::start`] runs a primary and a
//! **synchronous** standby cloned from it with `pg_basebackup -R`, so a commit the primary
//! acknowledges is already flushed on the standby (`synchronous_standby_names = '*'`,
//! `synchronous_commit = on`). [`TestCluster::kill`] crashes a server the way a lost machine
//! does (SIGKILL to the postmaster and every process of its session), [`TestCluster::promote`]
//! turns the standby into the new primary, and [`SyncPair::url`] is the multi-host
//! connection string (`host1:port1,host2:port2 … target_session_attrs=read-write`) with
//! which clients find whichever of the two accepts writes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster of its own.
pub struct TestCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    /// Whether the server flushes to disk (`fsync`): off for tests, on for benchmarks.
    durable: bool,
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`).
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (run scripts/install-postgres.sh): {e}"))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| "PostgreSQL is not installed (run scripts/install-postgres.sh)".into())
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
pub fn pg_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// How many ports a cluster tries before its start fails.
const PORT_ATTEMPTS: u32 = 5;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(55432)
}

/// A new, empty directory under the system's temp dir, owned by the user the servers run as.
fn new_base() -> Result<PathBuf, String> {
    let base = std::env::temp_dir().join(format!(
        "keyledger-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    if running_as_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&base).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(format!("cannot chown {} to postgres", base.display()));
        }
    }
    Ok(base)
}

/// Sends `signal` (a name such as `KILL`) to process `target` (`-PGID` for a process group).
fn signal(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl TestCluster {
    /// Creates and starts a cluster in a new directory under the system's temp dir, with
    /// `fsync = off` (a test needs no disk flush).
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// Like [`Self::start`], but with `fsync = on`, as a production server runs: what a
    /// benchmark of commit latency needs.
    pub fn start_durable() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, String> {
        let bin = bin_dir()?;
        let dir = new_base()?.join("data");
        let output = pg_command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&dir)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let mut cluster = Self { dir, port: free_port(), bin, durable };
        // The port was free when picked, but another cluster or an outgoing connection may
        // take it before the server binds it: then pick another.
        for attempt in 1.. {
            match cluster.start_server() {
                Ok(()) => break,
                Err(error) if attempt < PORT_ATTEMPTS && error.contains("could not bind") => {
                    let _ = std::fs::remove_file(cluster.log_path());
                    cluster.port = free_port();
                }
                Err(error) => return Err(error),
            }
        }
        Ok(cluster)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for database `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A client of database `database`, as the superuser.
    pub fn connect(&self, database: &str) -> Result<postgres::Client, String> {
        postgres::Client::connect(&self.url(database), postgres::NoTls).map_err(|e| format!("connect: {e}"))
    }

    /// Creates a new, empty database and returns its connection string.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.connect("postgres")?
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| format!("create database: {e}"))?;
        Ok(self.url(name))
    }

    /// Starts the server (again, after [`Self::stop`] or [`Self::kill`]) and waits until it
    /// accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.log_path();
        let fsync = if self.durable { "on" } else { "off" };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync={fsync}",
            self.port,
            self.socket_dir()
        );
        let status = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !status.success() {
            return Err(format!("pg_ctl start failed: {}", self.server_log()));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connect("postgres").is_err() {
            if Instant::now() > deadline {
                return Err("PostgreSQL did not accept connections within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): clients see their connections cut.
    pub fn stop(&self) -> Result<(), String> {
        let status = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("pg_ctl stop: {e}"))?;
        if status.success() { Ok(()) } else { Err("pg_ctl stop failed".into()) }
    }

    /// Crashes the server the way a lost machine does: SIGKILL to the postmaster and every
    /// process of its session (`pg_ctl` starts it as a session leader, so its backends,
    /// WAL sender and background workers are the process group of its pid). Nothing is
    /// flushed or shut down cleanly; connections drop at once. The System V segment the
    /// postmaster leaves behind is removed, as the kernel would on a real machine's death.
    pub fn kill(&self) -> Result<(), String> {
        let pid_file = std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .map_err(|e| format!("no postmaster.pid (is the server running?): {e}"))?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("unreadable postmaster.pid: {pid_file:?}"))?;
        // Line 7: the shared memory key and id.
        let shmid = lines.nth(5).and_then(|l| l.split_whitespace().nth(1)).map(str::to_owned);
        if !signal("KILL", &format!("-{pid}")) && !signal("KILL", &pid.to_string()) {
            return Err(format!("cannot SIGKILL the postmaster {pid}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Self::alive(pid) {
            if Instant::now() > deadline {
                return Err(format!("the postmaster {pid} survived SIGKILL"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A zombie postmaster (its reaper may be slow) still answers kill(pid, 0), which
        // would make the next start believe it runs: the lock file goes with the process.
        let _ = std::fs::remove_file(self.dir.join("postmaster.pid"));
        let sockets = PathBuf::from(self.socket_dir());
        let _ = std::fs::remove_file(sockets.join(format!(".s.PGSQL.{}.lock", self.port)));
        let _ = std::fs::remove_file(sockets.join(format!(".s.PGSQL.{}", self.port)));
        if let Some(shmid) = shmid {
            // Fails harmlessly once the last attached process is gone and the id is reused.
            let _ = Command::new("ipcrm").args(["-m", &shmid]).stderr(Stdio::null()).status();
        }
        Ok(())
    }

    /// Whether `pid` is a live process (not a zombie waiting for its parent).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    /// Promotes a standby to a primary (`pg_ctl promote`) and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), String> {
        let status = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-w", "-t", "30", "promote"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("pg_ctl promote: {e}"))?;
        if !status.success() {
            return Err(format!("pg_ctl promote failed: {}", self.server_log()));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.in_recovery()? {
            if Instant::now() > deadline {
                return Err("the promoted standby still recovers after 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    pub fn in_recovery(&self) -> Result<bool, String> {
        self.connect("postgres")?
            .query_one("SELECT pg_is_in_recovery()", &[])
            .map(|row| row.get(0))
            .map_err(|e| format!("pg_is_in_recovery: {e}"))
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("server.log")
    }

    fn socket_dir(&self) -> String {
        self.dir.parent().unwrap_or(&self.dir).display().to_string()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// A primary and a synchronous standby streaming from it, each a [`TestCluster`].
pub struct SyncPair {
    pub primary: TestCluster,
    pub standby: TestCluster,
}

impl SyncPair {
    /// Starts a primary, clones it with `pg_basebackup -R` into a standby that streams from
    /// it, then makes the primary wait for that standby on every commit
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = on`). Returns once
    /// `pg_stat_replication` shows the standby `streaming` and `sync`.
    ///
    /// Only the primary waits for a standby: the standby's own configuration names none, so
    /// once promoted it accepts writes alone (a real deployment would attach a new standby).
    pub fn start() -> Result<Self, String> {
        let primary = TestCluster::start()?;
        let dir = new_base()?.join("data");
        let output = pg_command(&primary.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-D"])
            .arg(&dir)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .output()
            .map_err(|e| format!("pg_basebackup: {e}"))?;
        if !output.status.success() {
            return Err(format!("pg_basebackup failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let standby =
            TestCluster { dir, port: free_port(), bin: primary.bin.clone(), durable: primary.durable };
        standby.start_server()?;
        let mut client = primary.connect("postgres")?;
        // One statement each: ALTER SYSTEM refuses to run inside a transaction block.
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "ALTER SYSTEM SET synchronous_commit = on",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(statement).map_err(|e| format!("{statement}: {e:?}"))?;
        }
        drop(client);
        let pair = Self { primary, standby };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = pair
                .primary
                .connect("postgres")?
                .query(
                    "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'",
                    &[],
                )
                .map_err(|e| format!("pg_stat_replication: {e}"))?;
            if !row.is_empty() {
                return Ok(pair);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the standby is not a streaming synchronous standby after 30 s:\n{}",
                    pair.standby.server_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The multi-host connection string of database `database`: both servers, and
    /// `target_session_attrs=read-write` so a client connects to whichever accepts writes.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
            self.primary.port, self.standby.port
        )
    }

    /// Creates a new, empty database on the primary (the standby replays it) and returns its
    /// multi-host connection string ([`Self::url`]).
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.primary.create_database(name)?;
        Ok(self.url(name))
    }
}
