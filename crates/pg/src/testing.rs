//! Throwaway PostgreSQL clusters for tests (feature `testing`).
//!
//! [`TestCluster::start`] runs `initdb` and `postgres` from Debian's packages
//! (`scripts/install-postgres.sh` installs them) in a fresh directory, listening on
//! 127.0.0.1 at a free port. PostgreSQL refuses to run as root, so when the tests run as
//! root the cluster runs as the `postgres` user. The cluster is stopped (immediate
//! shutdown) and its directory removed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster of its own.
pub struct TestCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(55432)
}

impl TestCluster {
    /// Creates and starts a cluster in a new directory under the system's temp dir.
    pub fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
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
        let dir = base.join("data");
        let output = pg_command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&dir)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let cluster = Self { dir, port: free_port(), bin };
        cluster.start_server()?;
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

    /// Creates a new, empty database and returns its connection string.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut client = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("connect: {e}"))?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| format!("create database: {e}"))?;
        Ok(self.url(name))
    }

    /// Starts the server (again, after [`Self::stop`]) and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.dir.parent().unwrap_or(&self.dir).join("server.log");
        let options =
            format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off", self.port, self.socket_dir());
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
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("pg_ctl start failed: {log}"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_err() {
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
