//! A node frozen (SIGSTOP, a long GC pause, a partition) while it holds the log head's lock
//! must not stall every other node: the database ends its session after
//! [`keyledger_pg::IDLE_IN_BATCH_TIMEOUT`], the lock is released, and the frozen node's
//! batch is never acknowledged.
mod support;

use keyledger_log::store::LogStore;
use keyledger_verify::merkle::Frontier;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::Ledger;

#[test]
fn a_writer_frozen_inside_its_batch_loses_the_lock_and_its_batch() {
    let ledger = Ledger::new();
    ledger.init("a");
    let url = ledger.url.clone();
    std::thread::spawn(move || {
        let mut frozen = keyledger_pg::PgStore::connect(&url).unwrap();
        frozen.begin(u64::MAX).expect("the first writer takes the head lock");

        let (done, waited) = mpsc::channel();
        let other_url = url.clone();
        std::thread::spawn(move || {
            let mut other = keyledger_pg::PgStore::connect(&other_url).unwrap();
            let started = Instant::now();
            let result = other.begin(u64::MAX).map(|_| ());
            other.abort();
            let _ = done.send((result, started.elapsed()));
        });
        let (result, elapsed) = waited
            .recv_timeout(keyledger_pg::IDLE_IN_BATCH_TIMEOUT + Duration::from_secs(20))
            .expect("another writer gets the lock once the frozen one's session is ended");
        result.expect("the other writer's batch begins");
        assert!(elapsed >= keyledger_pg::IDLE_IN_BATCH_TIMEOUT / 2, "it did wait for the lock: {elapsed:?}");

        let outcome = frozen.commit(0, &[], &[], &Frontier::new(keyledger_verify::merkle::TreeHash::Rfc6962));
        assert!(outcome.is_err(), "the frozen writer's batch is not acknowledged after it lost its session");
    })
    .join()
    .unwrap();
}
