//! Leak reports through the engine (docs/leaks.md): a report is recorded once per (key,
//! url, source), and the workspace's `on_leak` applies to every report, a repeat included.

use keyledger_core::{LeakReporter, OnLeak};
use keyledger_ledger::leaks::{LeakOutcome, LeakReportIn};
use keyledger_ledger::{Caller, KeyStatus, PolicyControls};

mod support;

use support::{spec, ws};

/// A key first reported under `notify`, then again at the same URL once the workspace says
/// `revoke`: the repeat records no second report but revokes the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_report_revokes_once_the_policy_says_revoke() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let (key, _) = engine.create(caller.clone(), ws("acme"), spec("leaky", &[])).await.unwrap();
    let report = || {
        vec![LeakReportIn {
            key_id: key.key_id,
            url: Some("https://github.com/acme/app/blob/main/.env".into()),
            source: Some("github".into()),
        }]
    };
    let first = engine.report_leaks(LeakReporter::Github, report(), false).await.unwrap();
    assert_eq!(first, vec![LeakOutcome::Recorded { revoked: false }]);
    assert_eq!(engine.key(&key.key_id).unwrap().status(keyledger_core::Timestamp::now()), KeyStatus::Active);

    let policy = engine.policy(&ws("acme"));
    let controls = PolicyControls { on_leak: Some(OnLeak::Revoke), ..PolicyControls::default() };
    engine.set_policy_with(caller.clone(), ws("acme"), policy, controls).await.unwrap();
    let len = engine.log().len();
    let repeat = engine.report_leaks(LeakReporter::Github, report(), false).await.unwrap();
    assert_eq!(repeat, vec![LeakOutcome::AlreadyReported { revoked: true }]);
    assert_eq!(engine.log().len(), len + 1, "the revocation only, no second report");
    assert_eq!(engine.key(&key.key_id).unwrap().status(keyledger_core::Timestamp::now()), KeyStatus::Revoked);
    let again = engine.report_leaks(LeakReporter::Github, report(), false).await.unwrap();
    assert_eq!(again, vec![LeakOutcome::AlreadyReported { revoked: false }], "revoked once");
    engine.shutdown().await;
}
