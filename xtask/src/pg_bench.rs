//! `cargo xtask bench --store postgres`: the PostgreSQL store's figures beside the embedded
//! store's, measured in one run on one machine (docs/benchmarks.md "PostgreSQL store",
//! docs/scaling.md).
//!
//! It exists so that the claims of docs/scaling.md rest on numbers anyone can reproduce.
//! Reuses the load test's client and server helpers ([`crate::load`]) and the PostgreSQL
//! test clusters of `keyledger_pg::testing` (as the `postgres` user on loopback). Measures:
//! 1. embedded store: JSON-mode verify (throughput, p99) and creates/s on one node;
//! 2. PostgreSQL (one cluster; its `fsync` setting is reported): the same on one node, then verify with three
//!    nodes on the database (each node gets a third of the connections), the time for a
//!    revoke to return (sequential revokes round-robin over the three nodes, each then
//!    checked as refused by the next node), events per database transaction (the growth of
//!    the head's size over the sum of the nodes' `keyledger_log_batches_total`: a batch that
//!    appended is exactly one committed transaction), and the database's bytes per event
//!    (table + index growth, and WAL bytes, over the three-node verify window);
//! 3. failover: a primary with a synchronous standby, one node on the multi-host URL; the
//!    primary is SIGKILLed, the standby promoted at once, and the time from the kill to the
//!    first `201` of a create the node answers.
//!
//! Every server and cluster is stopped and removed on every exit path (their own `Drop`s).

use crate::load::generator::{self, Outcome, Plan};
use crate::load::{Keyledger, VerifyMode, create_keys, create_make, micros, verify_body, verify_make};
use crate::process::target_dir;
use crate::report::{
    Section, commit_description, group_digits, load_average, machine_description, utc_now, write_section,
};
use anyhow::{Context, Result, bail};
use hyper::Method;
use keyledger_pg::testing::{SyncPair, TestCluster};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the table lives in docs/benchmarks.md.
const SECTION: Section =
    Section { begin: "<!-- pg:begin -->", end: "<!-- pg:end -->", heading: Some("## PostgreSQL store") };
/// Keys verified round-robin (created before measuring).
const KEYS: usize = 500;
/// Concurrent keep-alive connections of every load row.
const CONNECTIONS: usize = 32;
/// Revokes timed with three nodes.
const REVOKES: usize = 200;
/// Longest wait for the first accepted write after the primary's death.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// Everything measured, for the table.
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures {
    pub embedded_verify: Rate,
    pub embedded_creates: f64,
    pub embedded_events_per_batch: f64,
    pub pg1_verify: Rate,
    pub pg1_creates: f64,
    pub pg1_events_per_txn: f64,
    pub pg3_verify: Rate,
    pub pg3_events_per_txn: f64,
    pub pg3_txn_per_second: f64,
    pub revoke_p50_us: u64,
    pub revoke_p99_us: u64,
    pub revokes: usize,
    pub revoked_still_valid: usize,
    pub table_bytes_per_event: f64,
    pub wal_bytes_per_event: f64,
    pub failover_ms: f64,
    /// PostgreSQL's `fsync` setting during the measurements.
    pub pg_fsync: String,
}

/// Throughput and p99 of a verify row.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Rate {
    pub per_second: f64,
    pub p99_us: u64,
}

/// Builds keyledger, measures, prints the section and writes it into docs/benchmarks.md.
pub fn run(root: &Path, quick: bool) -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--package", "keyledger"]);
    crate::run_step(root, build)?;
    let binary = target_dir(root).join("release/keyledger");
    if !binary.is_file() {
        bail!("{} was not built", binary.display());
    }
    let seconds = if quick { 2.0 } else { 8.0 };
    let (started, load_before) = (Instant::now(), load_average());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(async {
        tokio::select! {
            figures = session(&binary, seconds) => figures,
            signal = crate::load::interrupted() => bail!("interrupted by {signal}; stopped the servers and clusters"),
        }
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    let context = RunContext {
        when: utc_now(),
        machine: machine_description(),
        commit: commit_description(root),
        command: if quick {
            "cargo xtask bench --store postgres --quick"
        } else {
            "cargo xtask bench --store postgres"
        },
        seconds,
        load: format!("{load_before} / {}", load_average()),
        elapsed: started.elapsed().as_secs_f64(),
    };
    let section = render(&figures, &context);
    println!("{section}");
    let doc = root.join("docs/benchmarks.md");
    write_section(&doc, &SECTION, &section)?;
    eprintln!("xtask: wrote {}", doc.display());
    if figures.revoked_still_valid > 0 {
        bail!("{} revoked keys were still accepted by another node", figures.revoked_still_valid);
    }
    Ok(())
}

fn plan(seconds: f64, connections: usize) -> Plan {
    Plan { connections, warmup: Duration::from_secs(1), measure: Duration::from_secs_f64(seconds) }
}

fn rate(outcome: &Outcome) -> Rate {
    Rate { per_second: measured(outcome, 200) / outcome.seconds.max(1e-9), p99_us: outcome.quantile_us(0.99) }
}

/// Answers with `status` in the measured window.
fn measured(outcome: &Outcome, status: u16) -> f64 {
    outcome.measured_statuses.get(&status).copied().unwrap_or(0) as f64
}

fn created_per_second(outcome: &Outcome) -> f64 {
    measured(outcome, 201) / outcome.seconds.max(1e-9)
}

async fn session(binary: &Path, seconds: f64) -> Result<Figures> {
    let lifetime = Duration::from_secs(600);
    let mut figures = Figures::default();

    // 1. The embedded store.
    eprintln!("xtask: embedded store…");
    let mut embedded = Keyledger::start(binary, lifetime).await?;
    let secrets = create_keys(&embedded, KEYS, CONNECTIONS).await?;
    let address = embedded.address;
    let before = embedded.metrics().await?;
    let outcome =
        generator::run(address, plan(seconds, CONNECTIONS), verify_make(VerifyMode::Json, address, &secrets))
            .await?;
    let after = embedded.metrics().await?;
    figures.embedded_verify = rate(&outcome);
    figures.embedded_events_per_batch =
        (after.events - before.events) / (after.batches - before.batches).max(1.0);
    let outcome =
        generator::run(address, plan(seconds, CONNECTIONS), create_make(address, embedded.bearer())).await?;
    figures.embedded_creates = created_per_second(&outcome);
    embedded.stop()?;
    drop(embedded);

    // 2. One database, one then three nodes.
    eprintln!("xtask: PostgreSQL, one node…");
    // `fsync = on`, as in production: a commit waits for its disk flush. The report states
    // the setting as read back.
    let cluster = blocking(TestCluster::start_durable).map_err(anyhow::Error::msg)?;
    figures.pg_fsync = setting(&cluster, "fsync")?;
    let url = blocking(|| cluster.create_database("keyledger")).map_err(anyhow::Error::msg)?;
    let ledger = init_store(binary, &url)?;
    let node_a = ledger.node(binary, lifetime, &url, "a").await?;
    let secrets = create_keys(&node_a, KEYS, CONNECTIONS).await?;
    let (head, before) = (head_size(&cluster)?, node_a.metrics().await?);
    let a = node_a.address;
    let outcome =
        generator::run(a, plan(seconds, CONNECTIONS), verify_make(VerifyMode::Json, a, &secrets)).await?;
    figures.pg1_verify = rate(&outcome);
    let after = node_a.metrics().await?;
    figures.pg1_events_per_txn = (head_size(&cluster)? - head) / (after.batches - before.batches).max(1.0);
    let outcome = generator::run(a, plan(seconds, CONNECTIONS), create_make(a, node_a.bearer())).await?;
    figures.pg1_creates = created_per_second(&outcome);

    eprintln!("xtask: PostgreSQL, three nodes…");
    let nodes = [
        node_a,
        ledger.node(binary, lifetime, &url, "b").await?,
        ledger.node(binary, lifetime, &url, "c").await?,
    ];
    let mut before = Vec::new();
    for node in &nodes {
        before.push(node.metrics().await?);
    }
    let (head, table, wal) = (head_size(&cluster)?, table_bytes(&cluster)?, wal_position(&cluster)?);
    let share = plan(seconds, CONNECTIONS / nodes.len());
    let runs = nodes.iter().map(|node| {
        let make = verify_make(VerifyMode::Json, node.address, &secrets);
        generator::run(node.address, share, make)
    });
    let mut merged = Outcome::empty(Duration::ZERO);
    for outcome in futures_all(runs).await? {
        merged.merge(outcome)?;
    }
    // `merge` adds the windows; the three ran at once over one window.
    merged.seconds = seconds;
    figures.pg3_verify = rate(&merged);
    let events = head_size(&cluster)? - head;
    let wal_bytes = wal_since(&cluster, &wal)?;
    let table_growth = table_bytes(&cluster)? - table;
    let mut batches = 0.0;
    for (node, before) in nodes.iter().zip(&before) {
        batches += node.metrics().await?.batches - before.batches;
    }
    figures.pg3_events_per_txn = events / batches.max(1.0);
    figures.pg3_txn_per_second = batches / (seconds + share.warmup.as_secs_f64());
    figures.table_bytes_per_event = table_growth / events.max(1.0);
    figures.wal_bytes_per_event = wal_bytes / events.max(1.0);

    eprintln!("xtask: {REVOKES} revokes over three nodes…");
    (figures.revoke_p50_us, figures.revoke_p99_us, figures.revoked_still_valid) = revokes(&nodes).await?;
    figures.revokes = REVOKES;
    for mut node in nodes {
        node.stop()?;
    }
    drop(cluster);

    // 3. Failover.
    eprintln!("xtask: failover…");
    figures.failover_ms = failover(binary, lifetime).await?;
    Ok(figures)
}

/// Awaits every future at once (on this task), in order.
async fn futures_all<F: std::future::Future<Output = Result<Outcome>> + Send + 'static>(
    runs: impl Iterator<Item = F>,
) -> Result<Vec<Outcome>> {
    let mut set = tokio::task::JoinSet::new();
    let mut order = Vec::new();
    for (i, run) in runs.enumerate() {
        order.push(i);
        set.spawn(async move { (i, run.await) });
    }
    let mut outcomes: Vec<Option<Outcome>> = order.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, outcome) = joined.context("load task")?;
        outcomes[i] = Some(outcome?);
    }
    outcomes.into_iter().map(|o| o.context("a load task did not finish")).collect()
}

/// Creates `REVOKES` keys, then revokes them one by one, round-robin over the nodes, timing
/// each call; each revoked key is then verified on the next node, which must refuse it.
/// Returns p50 and p99 in µs, and how many revoked keys another node still accepted.
async fn revokes(nodes: &[Keyledger]) -> Result<(u64, u64, usize)> {
    let mut keys = Vec::with_capacity(REVOKES);
    for i in 0..REVOKES {
        let node = &nodes[i % nodes.len()];
        let body = serde_json::json!({"name": format!("revoke-{i}"), "scopes": ["read"], "owner": "bench"});
        let view = node.admin(Method::POST, "/v1/workspaces/revokes/keys", Some(body), 201).await?;
        let id = view["key_id"].as_str().context("no key_id in the created key")?.to_owned();
        let secret = view["secret"].as_str().context("no secret in the created key")?.to_owned();
        keys.push((id, secret));
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).context("histogram")?;
    let mut still_valid = 0;
    for (i, (id, secret)) in keys.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let started = Instant::now();
        node.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None, 200).await?;
        latency.record(started.elapsed().as_micros() as u64).context("recording a latency")?;
        let next = &nodes[(i + 1) % nodes.len()];
        let (status, answer) = generator::call(
            next.address,
            Method::POST,
            "/v1/verify",
            &[("content-type", "application/json")],
            verify_body(i, secret),
        )
        .await?;
        let valid = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["valid"].as_bool())
            .unwrap_or(false);
        if status.is_success() && valid {
            still_valid += 1;
        }
    }
    Ok((latency.value_at_quantile(0.5), latency.value_at_quantile(0.99), still_valid))
}

/// Milliseconds from SIGKILL of the primary to the first create a node answers 201, the
/// standby promoted right after the kill; the node is on the multi-host URL.
async fn failover(binary: &Path, lifetime: Duration) -> Result<f64> {
    let pair = Arc::new(blocking(SyncPair::start).map_err(anyhow::Error::msg)?);
    let url = blocking(|| pair.create_database("keyledger")).map_err(anyhow::Error::msg)?;
    let ledger = init_store(binary, &url)?;
    let mut node = ledger.node(binary, lifetime, &url, "f").await?;
    let path = "/v1/workspaces/failover/keys";
    let body =
        |i: usize| Some(serde_json::json!({"name": format!("f-{i}"), "scopes": ["read"], "owner": "bench"}));
    node.admin(Method::POST, path, body(0), 201).await?;
    let killed = Instant::now();
    blocking(|| pair.primary.kill()).map_err(anyhow::Error::msg)?;
    let promoting = {
        let pair = pair.clone();
        tokio::task::spawn_blocking(move || pair.standby.promote())
    };
    let mut attempt = 1;
    let elapsed = loop {
        let call = node.admin(Method::POST, path, body(attempt), 201);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            break killed.elapsed();
        }
        if killed.elapsed() > FAILOVER_LIMIT {
            bail!("no write accepted within {} s of the primary's death", FAILOVER_LIMIT.as_secs());
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    promoting.await.context("promote task")?.map_err(anyhow::Error::msg)?;
    node.stop()?;
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// A ledger initialised in a database: the admin key and the node secrets to copy.
struct StoreLedger {
    dir: tempfile::TempDir,
    admin_key: String,
}

fn init_store(binary: &Path, url: &str) -> Result<StoreLedger> {
    let dir = tempfile::Builder::new().prefix("keyledger-pg-bench-").tempdir()?;
    let init_dir = dir.path().join("init");
    let output = Command::new(binary)
        .args(["init", "--store", url, "--data-dir"])
        .arg(&init_dir)
        .env_remove("KEYLEDGER_STORE")
        .output()
        .context("keyledger init --store")?;
    if !output.status.success() {
        bail!("keyledger init --store failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let outcome: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("init printed no JSON")?;
    let admin_key = outcome["admin_key"].as_str().context("no admin_key from init")?.to_owned();
    Ok(StoreLedger { dir, admin_key })
}

impl StoreLedger {
    /// Starts a node on `url` with its own data dir holding the ledger's pepper and signing key.
    async fn node(&self, binary: &Path, lifetime: Duration, url: &str, name: &str) -> Result<Keyledger> {
        let dir = tempfile::Builder::new().prefix(&format!("keyledger-pg-node-{name}-")).tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        for secret in ["signing.key", "pepper.key"] {
            std::fs::copy(self.dir.path().join("init").join(secret), data.join(secret))
                .with_context(|| format!("copy {secret} to node {name}"))?;
        }
        let data = data.to_str().context("temp dir path is not UTF-8")?.to_owned();
        Keyledger::serve(
            binary,
            lifetime,
            dir,
            &["--store", url, "--data-dir", &data],
            self.admin_key.clone(),
        )
        .await
    }
}

/// A server setting as the server reports it (`SHOW`).
/// Runs a blocking PostgreSQL call (the `postgres` crate's client, the test cluster) on
/// this runtime's worker without stalling it: the bench's session is async.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn setting(cluster: &TestCluster, name: &str) -> Result<String> {
    blocking(|| {
        let mut client = cluster.connect("postgres").map_err(anyhow::Error::msg)?;
        Ok(client.query_one(&format!("SHOW {name}"), &[])?.get(0))
    })
}

fn query_f64(cluster: &TestCluster, query: &str) -> Result<f64> {
    blocking(|| {
        let mut client = cluster.connect("keyledger").map_err(anyhow::Error::msg)?;
        let row = client.query_one(query, &[]).with_context(|| query.to_owned())?;
        Ok(row.get::<_, f64>(0))
    })
}

/// The log's length as the database's head row holds it.
fn head_size(cluster: &TestCluster) -> Result<f64> {
    query_f64(cluster, "SELECT size::float8 FROM keyledger_head")
}

/// The events table with its indexes and TOAST, in bytes.
fn table_bytes(cluster: &TestCluster) -> Result<f64> {
    query_f64(cluster, "SELECT pg_total_relation_size('keyledger_events')::float8")
}

fn wal_position(cluster: &TestCluster) -> Result<String> {
    blocking(|| {
        let mut client = cluster.connect("keyledger").map_err(anyhow::Error::msg)?;
        Ok(client.query_one("SELECT pg_current_wal_lsn()::text", &[])?.get(0))
    })
}

/// WAL bytes written since `lsn` (the whole cluster's: only keyledger writes to it).
fn wal_since(cluster: &TestCluster, lsn: &str) -> Result<f64> {
    blocking(|| {
        let mut client = cluster.connect("keyledger").map_err(anyhow::Error::msg)?;
        let row = client
            .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8", &[&lsn])?;
        Ok(row.get(0))
    })
}

/// The run's circumstances, for the section's header.
pub(crate) struct RunContext {
    pub when: String,
    pub machine: String,
    pub commit: String,
    pub command: &'static str,
    pub seconds: f64,
    pub load: String,
    pub elapsed: f64,
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 && value.is_finite() { format!("{:.2}×", value / base) } else { "—".into() }
}

/// The section: header lines and one table, the embedded store as the reference column.
pub(crate) fn render(f: &Figures, c: &RunContext) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### PostgreSQL store, {}", c.when);
    let _ = writeln!(out);
    let _ =
        writeln!(out, "- Machine: {}; the load generator, the nodes and PostgreSQL 15 share it.", c.machine);
    let _ = writeln!(out, "- Commit: {}.", c.commit);
    let _ = writeln!(
        out,
        "- Run with `{}`: {CONNECTIONS} keep-alive connections (with three nodes, {} per node), 1 s warm-up then {:.0} s per row, {KEYS} keys; PostgreSQL 15 on loopback (a throwaway cluster: `fsync = {}`{}, `synchronous_commit = on`; the failover pair has a synchronous standby); {:.0} s in all.",
        c.command,
        CONNECTIONS / 3,
        c.seconds,
        f.pg_fsync,
        if f.pg_fsync == "off" {
            ", so a commit costs no disk flush: the PostgreSQL rows are an upper bound"
        } else {
            ""
        },
        c.elapsed
    );
    let _ = writeln!(out, "- Load average before / after: {}.", c.load);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Figure | Embedded store | PostgreSQL, 1 node | PostgreSQL, 3 nodes | 1 node / embedded | 3 nodes / embedded |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    let (e, p1, p3) = (f.embedded_verify, f.pg1_verify, f.pg3_verify);
    let _ = writeln!(
        out,
        "| verify, JSON mode: throughput | {} req/s | {} req/s | {} req/s | {} | {} |",
        group_digits(e.per_second),
        group_digits(p1.per_second),
        group_digits(p3.per_second),
        ratio(p1.per_second, e.per_second),
        ratio(p3.per_second, e.per_second)
    );
    let _ = writeln!(
        out,
        "| verify, JSON mode: p99 | {} | {} | {} | {} | {} |",
        micros(e.p99_us),
        micros(p1.p99_us),
        micros(p3.p99_us),
        ratio(p1.p99_us as f64, e.p99_us as f64),
        ratio(p3.p99_us as f64, e.p99_us as f64)
    );
    let _ = writeln!(
        out,
        "| creates/s ({CONNECTIONS} clients) | {} | {} | — | {} | — |",
        group_digits(f.embedded_creates),
        group_digits(f.pg1_creates),
        ratio(f.pg1_creates, f.embedded_creates)
    );
    let _ = writeln!(
        out,
        "| events per write batch (embedded) / per database transaction (verify rows) | {:.1} | {:.1} | {:.1} ({} transactions/s) | — | — |",
        f.embedded_events_per_batch,
        f.pg1_events_per_txn,
        f.pg3_events_per_txn,
        group_digits(f.pg3_txn_per_second)
    );
    let _ = writeln!(
        out,
        "| revoke returns, p50 / p99 ({} sequential revokes, round-robin) | — | — | {} / {} | — | — |",
        f.revokes,
        micros(f.revoke_p50_us),
        micros(f.revoke_p99_us)
    );
    let _ = writeln!(
        out,
        "| revoked keys still accepted by the next node | — | — | {} of {} | — | — |",
        f.revoked_still_valid, f.revokes
    );
    let _ = writeln!(
        out,
        "| database bytes per event: table + index growth / WAL | — | — | {:.0} B / {:.0} B | — | — |",
        f.table_bytes_per_event, f.wal_bytes_per_event
    );
    let _ = writeln!(
        out,
        "| primary's death → first accepted write (standby promoted at once, node on the multi-host URL) | — | {:.0} ms | — | — | — |",
        f.failover_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_ratios_to_the_embedded_store() {
        let figures = Figures {
            embedded_verify: Rate { per_second: 10_000.0, p99_us: 2_000 },
            pg1_verify: Rate { per_second: 2_500.0, p99_us: 8_000 },
            pg3_verify: Rate { per_second: 5_000.0, p99_us: 500 },
            embedded_creates: 4_000.0,
            pg1_creates: 1_000.0,
            revokes: 200,
            revoke_p50_us: 1_500,
            revoke_p99_us: 900,
            failover_ms: 1234.4,
            pg_fsync: "off".into(),
            ..Figures::default()
        };
        let context = RunContext {
            when: "now".into(),
            machine: "m".into(),
            commit: "c".into(),
            command: "cargo xtask bench --store postgres",
            seconds: 8.0,
            load: "1 / 2".into(),
            elapsed: 100.0,
        };
        let text = render(&figures, &context);
        assert!(
            text.contains(
                "| verify, JSON mode: throughput | 10,000 req/s | 2,500 req/s | 5,000 req/s | 0.25× | 0.50× |"
            ),
            "{text}"
        );
        assert!(text.contains("| 2.00 ms | 8.00 ms | 500 µs | 4.00× | 0.25× |"), "{text}");
        assert!(text.contains("| 4,000 | 1,000 | — | 0.25× | — |"), "{text}");
        assert!(text.contains("| 1.50 ms / 900 µs |"), "{text}");
        assert!(text.contains("| 1234 ms |"), "{text}");
        assert!(text.contains("`fsync = off`, so a commit costs no disk flush"), "{text}");
        assert_eq!(ratio(1.0, 0.0), "—");
    }
}
