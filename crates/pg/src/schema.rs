//! The database schema and its versions.
//!
//! Each migration is one SQL file; [`migrate`] applies the missing ones in order, all in
//! one transaction serialised by an advisory lock (so two nodes starting at once never run
//! a migration twice), and records the version reached in `keyledger_schema_version`. A
//! node refuses a database whose schema is newer than the last migration it knows.

use crate::error::PgError;

/// The migrations, in order: `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_witness_records.sql"),
    include_str!("migrations/0003_webhook_attempts.sql"),
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key migrations hold (`pg_advisory_xact_lock`): "keyledgr" in ASCII.
const MIGRATION_LOCK: i64 = 0x6b65_796c_6564_6772;

/// Brings the database's schema to [`SCHEMA_VERSION`], or refuses a newer one
/// ([`PgError::NewerSchema`]), changing nothing then. Returns the version found before.
pub fn migrate(client: &mut postgres::Client) -> Result<i32, PgError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // Checked first rather than `IF NOT EXISTS`, which logs a notice on every start.
    let exists: bool =
        tx.query_one("SELECT to_regclass('keyledger_schema_version') IS NOT NULL", &[])?.get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE keyledger_schema_version (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                version   integer NOT NULL
            )",
        )?;
    }
    let found: i32 =
        tx.query_opt("SELECT version FROM keyledger_schema_version", &[])?.map_or(0, |row| row.get(0));
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema { found, known: SCHEMA_VERSION });
    }
    for migration in MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(migration)?;
    }
    tx.execute(
        "INSERT INTO keyledger_schema_version (singleton, version) VALUES (true, $1)
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(found)
}
