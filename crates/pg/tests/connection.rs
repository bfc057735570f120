//! Connection strings: a multi-host string with `target_session_attrs=read-write` (what a
//! failover setup uses) finds the writable server past a dead one.
use keyledger_pg::testing::TestCluster;

#[test]
fn a_multi_host_connection_string_skips_a_dead_host_and_finds_the_server() {
    let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
    cluster.create_database("ledger").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={dead_port},{} user=postgres dbname=ledger target_session_attrs=read-write connect_timeout=2",
        cluster.port()
    );
    let mut store = keyledger_pg::PgStore::connect(&url).expect("the second host answers");
    assert!(store.identity().unwrap().is_none(), "the schema is there, no ledger yet");
    let error = keyledger_pg::PgStore::connect("host=127.0.0.1 port=notaport").unwrap_err();
    assert!(matches!(error, keyledger_pg::PgError::BadUrl(_)), "{error}");
}
