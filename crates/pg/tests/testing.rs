//! The test cluster itself: it starts, takes a schema, stops and starts again.
use keyledger_pg::testing::{SyncPair, TestCluster};

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
    // Version 1: identity, events, head, checkpoints, cosigned, leases; version 2: fork alarms;
    // version 3: webhook attempts.
    assert_eq!(tables, 8);
    drop(client);
    cluster.stop().unwrap();
    assert!(
        postgres::Client::connect(&url, postgres::NoTls).is_err(),
        "a stopped cluster refuses connections"
    );
    cluster.start_server().unwrap();
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_ok());
}

#[test]
fn a_killed_cluster_refuses_connections_and_recovers_on_restart() {
    let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
    let url = cluster.create_database("crash").unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)").unwrap();
    cluster.kill().unwrap();
    assert!(client.query("SELECT v FROM t", &[]).is_err(), "a killed server's connections are cut");
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err(), "a killed server refuses connections");
    cluster.start_server().unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let v: i32 = client.query_one("SELECT v FROM t", &[]).unwrap().get(0);
    assert_eq!(v, 7, "a committed row survives the crash");
}

#[test]
fn a_sync_standby_holds_every_acknowledged_commit_and_takes_over_through_the_multi_host_url() {
    let pair = SyncPair::start().expect("start a primary and a synchronous standby");
    let url = pair.create_database("ha").unwrap();
    assert!(url.contains("target_session_attrs=read-write"), "{url}");
    assert!(!pair.primary.in_recovery().unwrap());
    assert!(pair.standby.in_recovery().unwrap());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let port: i32 = client.query_one("SELECT current_setting('port')::int", &[]).unwrap().get(0);
    assert_eq!(port, i32::from(pair.primary.port()), "the multi-host URL picks the primary");
    let sync: String = client.query_one("SHOW synchronous_standby_names", &[]).unwrap().get(0);
    assert_eq!(sync, "*");
    client.batch_execute("CREATE TABLE t (v int)").unwrap();
    for v in 0..50 {
        client.execute("INSERT INTO t VALUES ($1)", &[&v]).unwrap();
    }
    pair.primary.kill().unwrap();
    assert!(client.execute("INSERT INTO t VALUES (50)", &[]).is_err(), "the dead primary takes no write");
    assert!(
        postgres::Client::connect(&url, postgres::NoTls).is_err(),
        "before promotion no server accepts writes"
    );
    pair.standby.promote().unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let port: i32 = client.query_one("SELECT current_setting('port')::int", &[]).unwrap().get(0);
    assert_eq!(port, i32::from(pair.standby.port()), "the multi-host URL now picks the promoted standby");
    let count: i64 = client.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(count, 50, "every commit the primary acknowledged is on the standby");
    client.execute("INSERT INTO t VALUES (50)", &[]).expect("the promoted standby accepts writes alone");
}
