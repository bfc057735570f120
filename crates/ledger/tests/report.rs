//! Compliance reports against the audit API and against exports (docs/compliance.md).
//!
//! proptest generates histories (keys created in two workspaces, verified with a scope they
//! hold or not, disabled, enabled, rotated, revoked and presented again) and runs them
//! through a real engine. For each, the report of the whole ledger and of each workspace
//! must agree with the audit API on every per-key figure (uses and denials in the period,
//! the inventory's status and last use, the lifecycle events), and
//! `keyledger_verify::report::check_with_export` must recompute every figure from an export
//! (unfiltered: the whole tree; filtered: the workspace's lines).

use keyledger_core::{Actor, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::audit::KindFilter;
use keyledger_ledger::export::{ExportPlan, ExportRequest};
use keyledger_ledger::report::{ReportRequest, produce};
use keyledger_ledger::{Caller, Engine, VerifyRequirements};
use keyledger_verify::report::{Coverage, check_with_export, open_report};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use std::io::Cursor;

mod support;

use support::{proptest_config, rid, spec, ws};

const WORKSPACES: [&str; 2] = ["acme", "beta"];
const DAY: i64 = 86_400_000_000;

#[derive(Clone, Debug)]
enum Step {
    Create(usize),
    Verify { key: usize, scope_held: bool },
    Disable(usize),
    Enable(usize),
    Rotate(usize),
    Revoke(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..2usize).prop_map(Step::Create),
        6 => (0..8usize, any::<bool>()).prop_map(|(key, scope_held)| Step::Verify { key, scope_held }),
        1 => (0..8usize).prop_map(Step::Disable),
        1 => (0..8usize).prop_map(Step::Enable),
        1 => (0..8usize).prop_map(Step::Rotate),
        1 => (0..8usize).prop_map(Step::Revoke),
    ]
}

fn figure<'a>(row: &'a Value, name: &str) -> &'a Value {
    row.get(name).unwrap_or_else(|| panic!("no `{name}` in {row}"))
}

async fn run(engine: &Engine, caller: &Caller, steps: &[Step]) {
    // Every key issued, with its secret, in order.
    let mut keys: Vec<(keyledger_core::KeyId, keyledger_core::Secret)> = Vec::new();
    let caller = || Caller { request_id: rid(), ..caller.clone() };
    for step in steps {
        let pick = |i: usize| (!keys.is_empty()).then(|| i % keys.len());
        match *step {
            Step::Create(w) => {
                let (record, secret) =
                    engine.create(caller(), ws(WORKSPACES[w]), spec("k", &["read"])).await.unwrap();
                keys.push((record.key_id, secret));
            }
            Step::Verify { key, scope_held } => {
                if let Some(i) = pick(key) {
                    let wants = VerifyRequirements {
                        scopes: vec![if scope_held { "read" } else { "write" }.into()],
                        ..Default::default()
                    };
                    let context =
                        UsageContext { ip: Some("203.0.113.7".parse().unwrap()), ..Default::default() };
                    engine.verify(rid(), keys[i].1.expose(), wants, context).await.unwrap();
                }
            }
            Step::Disable(key) | Step::Enable(key) => {
                if let Some(i) = pick(key) {
                    let _ = engine
                        .set_disabled(caller(), keys[i].0, matches!(step, Step::Disable(_)), None)
                        .await;
                }
            }
            Step::Rotate(key) => {
                if let Some(i) = pick(key)
                    && let Ok((_, new, secret)) = engine.rotate(caller(), keys[i].0, 0).await
                {
                    keys.push((new.key_id, secret));
                }
            }
            Step::Revoke(key) => {
                if let Some(i) = pick(key) {
                    let _ = engine.revoke(caller(), keys[i].0, Some("test".into())).await;
                }
            }
        }
    }
}

/// Every figure of `report` that the audit API also answers is the audit API's answer.
fn agrees_with_audit(engine: &Engine, report: &Value, from: Timestamp, to: Timestamp) {
    let figures = &report["figures"];
    let audit = engine.audit();
    let (mut used, mut denied) = (0, 0);
    for row in figures["inventory"].as_array().unwrap() {
        let key_id = figure(row, "key_id").as_str().unwrap().parse().unwrap();
        let record = engine.key(&key_id).unwrap();
        let data = audit.compromise(&record, Some(from), Some(to)).unwrap();
        assert_eq!(figure(row, "uses_in_period"), &json!(data.uses.allowed), "{row}");
        assert_eq!(figure(row, "denials_in_period"), &json!(data.uses.denied), "{row}");
        used += data.uses.allowed;
        denied += data.uses.denied;
        assert_eq!(figure(row, "status"), &json!(record.status(Timestamp::now()).as_str()), "{row}");
        assert_eq!(figure(row, "last_used_at"), &json!(record.last_used.at.map(|t| t.to_rfc3339())), "{row}");
        let (lifecycle, _) =
            audit.key_events(&key_id, KindFilter::Lifecycle, Some(from), Some(to), None, 1000).unwrap();
        let listed = figures["lifecycle"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["key_id"] == json!(key_id.to_string()) && e["kind"] != json!("lookup"))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(listed, lifecycle.iter().map(|e| e.seq).collect::<Vec<_>>(), "lifecycle of {key_id}");
    }
    assert_eq!(figures["usage"]["used"], json!(used));
    assert_eq!(figures["usage"]["denied"], json!(denied));
}

#[test]
fn reports_agree_with_the_audit_api_and_are_recomputed_from_exports() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut runner = TestRunner::new(proptest_config(0x7265_706f_7274, 64));
    let strategy = proptest::collection::vec(step(), 1..40);
    let result = runner.run(&strategy, |steps| {
        let (_dir, outcome, engine) = support::ledger();
        let caller = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
        runtime.block_on(async {
            run(&engine, &caller, &steps).await;
            assert!(engine.wait_for_projections(std::time::Duration::from_secs(10)).await);
            let from = Timestamp::now().plus_micros(-DAY);
            let to = Timestamp::now().plus_micros(DAY);
            let mut scopes: Vec<Option<Vec<WorkspaceId>>> = vec![None];
            scopes.extend(WORKSPACES.iter().map(|w| Some(vec![ws(w)])));
            for workspaces in scopes {
                let request = ReportRequest { workspaces: workspaces.clone(), from, to, unused_days: 90 };
                let report = produce(&engine, request).await.unwrap();
                let value = Value::Object(report.clone());
                if workspaces.is_some() {
                    agrees_with_audit(&engine, &value, from, to);
                }
                let opened = open_report(report, engine.public_key()).unwrap();
                let export =
                    ExportRequest { workspace: workspaces.map(|mut w| w.remove(0)), ..Default::default() };
                let plan = ExportPlan::prepare(&engine, export).await.unwrap();
                let mut bytes = Vec::new();
                plan.write(engine.log(), &mut bytes).unwrap();
                let (checked, summary) =
                    check_with_export(&opened, engine.public_key(), || Ok(Cursor::new(bytes.as_slice())))
                        .unwrap();
                let expected =
                    if summary.filtered { Coverage::LinesIncluded } else { Coverage::CompleteTree };
                assert_eq!(checked.coverage, expected);
            }
        });
        runtime.block_on(engine.shutdown());
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
