//! `cargo xtask scale --data-dir D`: times the operations whose cost must not grow with
//! history, on a log written by `gen-log`: startup to first verify, the compromise report
//! of the busiest key, a source lookup, `active_at`, hygiene, the quarterly compliance
//! report of a workspace, export and its offline
//! verification, `log verify`; plus memory and bytes on disk per event. Prints JSON.
//!
//! It measures one log in this process and writes no table: [`crate::scale_table`] runs it
//! on the logs it generates and renders the figures into docs/benchmarks.md.

use anyhow::{Context, Result};
use keyledger_core::{RequestId, Timestamp, UsageContext};
use keyledger_ledger::export::{ExportPlan, ExportRequest};
use keyledger_ledger::{Engine, EngineOptions, VerifyRequirements};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Median wall time of `runs` calls, in milliseconds.
fn time_ms<T>(runs: usize, mut call: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A field of /proc/self/status in kB (VmRSS, VmHWM).
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(data_dir: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rss_before = proc_status_kb("VmRSS:");
    let started = Instant::now();
    let engine = Engine::open(&data_dir, EngineOptions::default()).context("open")?;
    // The busiest key, and a verification of it: startup ends at the first verify answered.
    let (hot, workspace) = {
        let registry = engine.registry();
        let hot = registry.keys().max_by_key(|k| k.last_used().count).context("no keys")?.record();
        let workspace = hot.workspace.clone();
        (hot, workspace)
    };
    let first_verify = runtime.block_on(engine.verify(
        RequestId::generate(Timestamp::now().millis()),
        "kl_live_not-a-key",
        VerifyRequirements::default(),
        UsageContext::default(),
    ))?;
    drop(first_verify);
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_open_mb = proc_status_kb("VmRSS:").saturating_sub(rss_before) as f64 / 1024.0;
    let events = engine.log().len();
    let keys = engine.registry().len();
    runtime.block_on(engine.wait_for_projections(std::time::Duration::from_secs(60)));

    let audit = engine.audit();
    let report_ms = time_ms(5, || Ok(audit.compromise(&hot, None, None)?))?;
    let day = Timestamp::now().plus_micros(-86_400_000_000);
    let report_day_ms = time_ms(5, || Ok(audit.compromise(&hot, Some(day), None)?))?;
    let address = hot.last_used.ip.context("the busiest key has no last address")?;
    let single = keyledger_ledger::audit::ip_key(address);
    let source_ms = time_ms(5, || Ok(audit.sources(single, single, None, None)?))?;
    let (low, high) = keyledger_ledger::audit::cidr_range(address, 16).context("cidr")?;
    let source16_ms = time_ms(5, || Ok(audit.sources(low, high, None, None)?))?;
    let now = Timestamp::now();
    let mut active = 0;
    let active_at_ms = time_ms(3, || {
        active = audit.active_at(&workspace, now)?.len();
        Ok(())
    })?;
    let hygiene_ms = time_ms(3, || {
        let registry = engine.registry();
        let cutoff = now.plus_micros(-90 * 86_400_000_000);
        Ok(registry
            .workspace_keys(&workspace)
            .filter(|k| k.last_used().at.is_none_or(|t| t < cutoff))
            .count())
    })?;

    // The quarterly compliance report of the busiest key's workspace: one fold of the log up
    // to a fresh checkpoint, signed (docs/compliance.md).
    let quarter = keyledger_ledger::report::ReportRequest {
        workspaces: Some(vec![workspace.clone()]),
        from: now.plus_micros(-91 * 86_400_000_000),
        to: now,
        unused_days: 90,
    };
    let compliance_ms =
        time_ms(1, || Ok(runtime.block_on(keyledger_ledger::report::produce(&engine, quarter.clone()))?))?;

    // Export everything to a file, then verify it offline.
    let export_path = data_dir.with_extension("export.jsonl");
    let plan = runtime.block_on(ExportPlan::prepare(&engine, ExportRequest::default()))?;
    let export_started = Instant::now();
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&export_path)?);
    let stats = plan.write(engine.log(), file)?;
    let export_s = export_started.elapsed().as_secs_f64();
    let rss_peak_mb = proc_status_kb("VmHWM:") as f64 / 1024.0;
    let public_key = engine.public_key().clone();
    runtime.block_on(engine.shutdown());
    drop(engine);

    let verify_started = Instant::now();
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&export_path)?);
    let summary = keyledger_verify::export::verify_export(reader, &public_key, None)?;
    let export_verify_s = verify_started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&export_path);
    drop(summary);

    let log_started = Instant::now();
    let storage = keyledger_log::storage::OsStorage::shared();
    keyledger_log::verify::verify_log(
        storage,
        &data_dir.join("log"),
        &public_key,
        keyledger_verify::merkle::TreeHash::Rfc6962,
        &mut |_, _| {},
    )?;
    let log_verify_s = log_started.elapsed().as_secs_f64();

    let bytes = crate::dir_size(&data_dir);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "data_dir": data_dir.display().to_string(),
            "events": events,
            "keys": keys,
            "startup_to_first_verify_ms": startup_ms,
            "rss_after_open_mb": rss_open_mb,
            "rss_peak_mb": rss_peak_mb,
            "hot_key_uses": hot.last_used.count,
            "compromise_report_whole_life_ms": report_ms,
            "compromise_report_last_day_ms": report_day_ms,
            "source_lookup_single_ms": source_ms,
            "source_lookup_cidr16_ms": source16_ms,
            "active_at_ms": active_at_ms,
            "active_at_keys": active,
            "hygiene_ms": hygiene_ms,
            "compliance_report_quarter_ms": compliance_ms,
            "export_lines": stats.lines,
            "export_lines_per_s": stats.lines as f64 / export_s,
            "export_verify_lines_per_s": stats.lines as f64 / export_verify_s,
            "log_verify_events_per_s": events as f64 / log_verify_s,
            "bytes_on_disk": bytes,
            "bytes_per_event": bytes as f64 / events.max(1) as f64,
        }))?
    );
    Ok(())
}
