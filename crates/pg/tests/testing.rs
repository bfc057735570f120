//! The test cluster itself: it starts, takes a schema, stops and starts again.
use keyledger_pg::testing::TestCluster;

#[test]
fn a_test_cluster_starts_serves_stops_and_restarts() {
    let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
    let url = cluster.create_database("probe").unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for migration in keyledger_pg::schema::MIGRATIONS {
        client.batch_execute(migration).unwrap();
    }
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'keyledger_%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(tables, 6);
    drop(client);
    cluster.stop().unwrap();
    assert!(
        postgres::Client::connect(&url, postgres::NoTls).is_err(),
        "a stopped cluster refuses connections"
    );
    cluster.start_server().unwrap();
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_ok());
}
