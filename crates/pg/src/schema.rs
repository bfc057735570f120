//! The database schema and its versions.
//!
//! Each migration is one SQL file, applied in order in its own transaction; the version
//! table records the last one applied. A node refuses a database whose schema is newer than
//! the last migration it knows.

/// The migrations, in order: `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
