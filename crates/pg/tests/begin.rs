//! `PgStore::begin` locks the shared head row; whatever it finds wrong after that, it must
//! release the lock before answering, or every other node's writes would wait on it.
use keyledger_log::store::{LogStore, StoreError};
use keyledger_pg::PgStore;

mod support;

use support::Ledger;

#[test]
fn a_begin_that_finds_the_store_inconsistent_releases_the_head_lock() {
    let ledger = Ledger::new();
    ledger.init("a");
    // A head claiming one event more than the table holds: the read after the lock is short.
    let size: i64 = ledger.sql(|c| {
        c.query_one("UPDATE keyledger_head SET size = size + 1 RETURNING size", &[]).unwrap().get(0)
    });
    let mut store = PgStore::connect(&ledger.url).unwrap();
    let answer = store.begin(size as u64 - 1);
    assert!(matches!(answer, Err(StoreError::Diverged(_))), "{answer:?}");

    let locked = ledger.sql(|c| {
        c.query_one("SELECT size FROM keyledger_head FOR UPDATE NOWAIT", &[]).map(|row| row.get::<_, i64>(0))
    });
    assert_eq!(
        locked.map_err(|e| e.to_string()),
        Ok(size),
        "the head row is still locked by the failed begin"
    );

    // The store stays usable: the next begin locks and reads the head again.
    let again = store.begin(size as u64 - 1);
    assert!(matches!(again, Err(StoreError::Diverged(_))), "{again:?}");
}
