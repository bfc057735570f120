//! The witness records in the database (keyledger_pg::witnessed): one cosigned checkpoint
//! row that never goes back to a smaller size, reads bounded, one alarm per witness.
use keyledger_core::Timestamp;
use keyledger_log::checkpoint::MAX_COSIGNED_BYTES;
use keyledger_log::witnessed::{AlarmRecord, WitnessRecords, WitnessRecordsError};
use keyledger_pg::PgWitnessRecords;
use keyledger_pg::testing::TestCluster;

fn alarm(witness: &str, kind: &str, witness_size: Option<u64>) -> AlarmRecord {
    AlarmRecord {
        witness: witness.into(),
        kind: kind.into(),
        log_size: 12,
        log_root: [3; 32],
        witness_size,
        detected_at: Timestamp(1_764_800_000_123_456),
        cleared: false,
    }
}

#[test]
fn the_cosigned_checkpoint_and_the_fork_alarms_are_kept_bounded() {
    let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
    let url = cluster.create_database("records").unwrap();
    // Migrated as a node's store does it, twice (the second is a no-op).
    keyledger_pg::PgStore::connect(&url).unwrap();
    let store = keyledger_pg::PgStore::connect(&url).unwrap();
    let records = PgWitnessRecords::new(store.config().clone());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let count = |client: &mut postgres::Client, table: &str| -> i64 {
        client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).unwrap().get(0)
    };

    assert_eq!(records.cosigned().unwrap(), None);
    records.store_cosigned(5, "five\n").unwrap();
    records.store_cosigned(7, "seven\n").unwrap();
    records.store_cosigned(7, "seven, more cosigned\n").unwrap();
    assert_eq!(records.cosigned().unwrap().as_deref(), Some("seven, more cosigned\n"));
    // A late write of an older checkpoint (a node that lost the lease) changes nothing.
    records.store_cosigned(6, "six\n").unwrap();
    assert_eq!(records.cosigned().unwrap().as_deref(), Some("seven, more cosigned\n"));
    assert_eq!(count(&mut client, "keyledger_cosigned"), 1, "only the latest is kept");
    // A row too large to be a cosigned checkpoint is not read.
    let huge = "x".repeat(MAX_COSIGNED_BYTES as usize + 1);
    client.execute("UPDATE keyledger_cosigned SET note = $1", &[&huge]).unwrap();
    assert_eq!(records.cosigned(), Err(WitnessRecordsError::TooLarge { limit: MAX_COSIGNED_BYTES }));

    let names = ["w1".to_owned(), "w2".to_owned()];
    assert_eq!(records.alarms(&names).unwrap(), []);
    records.record_alarm(&alarm("w1", "witness_ahead", Some(99))).unwrap();
    records.record_alarm(&alarm("w1", "foreign_cosignature", None)).unwrap();
    records.record_alarm(&alarm("gone", "witness_ahead", Some(1))).unwrap();
    assert_eq!(records.alarms(&names).unwrap(), [alarm("w1", "foreign_cosignature", None)]);
    records.clear_alarm("w1").unwrap();
    assert_eq!(
        records.alarms(&names).unwrap(),
        [AlarmRecord { cleared: true, ..alarm("w1", "foreign_cosignature", None) }]
    );
    assert_eq!(records.alarms(&[]).unwrap(), []);
    assert_eq!(count(&mut client, "keyledger_fork_alarms"), 2, "one row per witness");
    // The database refuses what no node writes.
    assert!(records.record_alarm(&alarm("w2", "made_up", None)).is_err());
}
