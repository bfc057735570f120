//! Leases: one holder at a time, taken over within seconds when the holder stops renewing.
use keyledger_pg::lease::{Lease, LeaseTimes, node_id};
use keyledger_pg::testing::TestCluster;
use std::time::{Duration, Instant};

const TIMES: LeaseTimes = LeaseTimes {
    term: Duration::from_secs(2),
    renew_every: Duration::from_millis(300),
    margin: Duration::from_millis(500),
};

#[test]
fn one_node_holds_a_lease_and_another_takes_it_over_when_renewals_stop() {
    let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
    let url = cluster.create_database("leases").unwrap();
    let mut store = keyledger_pg::PgStore::connect(&url).unwrap();
    let config = store.config().clone();
    assert!(store.identity().unwrap().is_none());
    let a = Lease::start(config.clone(), "jobs", node_id(), TIMES).unwrap();
    let b = Lease::start(config, "jobs", format!("{}-b", node_id()), TIMES).unwrap();
    let (held_a, held_b) = (a.holding(), b.holding());

    // Never both, and one of them within a renewal or two.
    let started = Instant::now();
    let mut someone = None;
    while started.elapsed() < Duration::from_secs(2) {
        let (x, y) = (held_a.is_held(), held_b.is_held());
        assert!(!(x && y), "two holders at once");
        if x || y {
            someone.get_or_insert(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(someone.is_some_and(|t| t < Duration::from_secs(1)), "nobody took the lease: {someone:?}");

    // The holder dies (stops renewing without releasing): the other takes over within a
    // term and a renewal, and the two never overlap (the old holder's fence fell first).
    let a_held = held_a.is_held();
    let (dead, survivor) = if a_held { (a.abandon(), held_b) } else { (b.abandon(), held_a) };
    let died = Instant::now();
    while !survivor.is_held() {
        assert!(!dead.is_held() || died.elapsed() < TIMES.term, "the dead holder's fence never fell");
        assert!(died.elapsed() < TIMES.term + TIMES.renew_every * 3, "no takeover within seconds");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dead.is_held(), "the old holder's fence fell before the takeover");
}

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_runs_the_webhook_and_witness_jobs_and_another_takes_over_when_it_stops() {
    let ledger = support::Ledger::new();
    ledger.init("a");
    let a = ledger.open(&ledger.dir("a"));
    let b = ledger.open(&ledger.node_dir("b", "a"));
    let started = Instant::now();
    while !(a.runs_jobs() || b.runs_jobs()) {
        assert!(started.elapsed() < Duration::from_secs(5), "no node took the jobs lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..50 {
        assert!(!(a.runs_jobs() && b.runs_jobs()), "two nodes run the jobs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (holder, other) = if a.runs_jobs() { (a, b) } else { (b, a) };
    holder.shutdown().await;
    let stopped = Instant::now();
    // The lease is released at shutdown: the other node takes it at its next attempt (3 s).
    while !other.runs_jobs() {
        assert!(stopped.elapsed() < Duration::from_secs(5), "no takeover within seconds");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    other.shutdown().await;
}
