//! [`PgStore`]: the log held in PostgreSQL, the writer's shared store
//! (keyledger_log::store, docs/log-format.md "PostgreSQL store").
//!
//! A batch is one transaction: `BEGIN`, `SELECT … FROM keyledger_head FOR UPDATE` (the
//! single-writer lock of ADR 0004, now a row lock), the records other nodes appended since
//! this node's length, then the batch's events with their leaf hashes, the new head (size,
//! root, frontier) and `NOTIFY keyledger_log` in one statement, and `COMMIT`. Nothing is
//! acknowledged before the `COMMIT` returned; what a commit survives is PostgreSQL's to
//! decide (`synchronous_commit`, synchronous standbys: docs/operations.md).
//!
//! A connection that fails is dropped; the writer's recovery calls
//! [`LogStore::reconnect`], which opens a new one (a multi-host connection string with
//! `target_session_attrs=read-write` then finds the new primary).

use crate::error::{PgError, UrlFault, describe};
use keyledger_log::store::{Foreign, Head, LogStore, SharedCheckpoint, StoreError};
use keyledger_verify::merkle::{Frontier, Hash};
use postgres::{Client, Config, NoTls};
use std::time::Duration;

/// Most records one batch's `begin` reads; a node further behind follows first.
const BEGIN_LIMIT: u64 = 65_536;

/// The PostgreSQL log store.
pub struct PgStore {
    config: Config,
    client: Option<Client>,
    in_batch: bool,
    follow_every: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection string: it may hold a password.
        f.debug_struct("PgStore").field("in_batch", &self.in_batch).finish_non_exhaustive()
    }
}

/// Parses a connection string (URL or key=value, multi-host allowed), what every
/// connection keyledger makes starts from: the password from `PGPASSWORD` or the password
/// file when the string names none ([`crate::password`]), and a connect timeout of 5 s
/// unless the string sets one.
pub fn parse_url(url: &str) -> Result<Config, PgError> {
    let mut config: Config = url.parse().map_err(|e: postgres::Error| bad_url(url, &e))?;
    if let Some(warning) = crate::password::fill(&mut config, &|name| std::env::var_os(name)) {
        tracing::warn!("{warning}");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok(config)
}

/// The options a connection string may set (libpq's names, as the client parses them):
/// only these are named in an error.
const OPTIONS: [&str; 21] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslcert",
    "sslkey",
];

/// How a connection string in URL form starts.
const URL_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `text` is meant as a connection string rather than a path: a `postgres://` URL,
/// or key=value pairs (an option's name opening a word, then `=`, as in `hostaddr=10.0.0.7`
/// or `host = db`). Where a command takes either, a string this accepts is never used as a
/// path, which errors and output would echo; a malformed one is then refused by
/// [`parse_url`], which names its fault without its text.
pub fn is_connection_string(text: &str) -> bool {
    if URL_PREFIXES.iter().any(|prefix| text.starts_with(prefix)) {
        return true;
    }
    let mut words = std::iter::once(0)
        .chain(text.char_indices().filter(|(_, c)| c.is_whitespace()).map(|(at, c)| at + c.len_utf8()));
    words.any(|at| {
        OPTIONS.iter().any(|option| {
            text[at..].strip_prefix(option).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    })
}

/// Why a connection string was refused, from the client's error: the option at fault by
/// its name (from [`OPTIONS`], never the string's text), or the kind of fault.
fn bad_url(url: &str, error: &postgres::Error) -> PgError {
    let cause = std::error::Error::source(error);
    let text = cause.map(ToString::to_string).unwrap_or_default();
    let is_url = URL_PREFIXES.iter().any(|prefix| url.starts_with(prefix));
    let fault = match text.strip_prefix("invalid value for option `").and_then(|rest| rest.strip_suffix('`'))
    {
        Some(option) => match OPTIONS.iter().find(|known| **known == option) {
            Some(known) => UrlFault::InvalidValue(known),
            None => UrlFault::InvalidValueOfAnOption,
        },
        None if text.starts_with("unknown option") => UrlFault::UnknownOption,
        None if cause.is_some_and(<dyn std::error::Error>::is::<std::str::Utf8Error>) => UrlFault::NotUtf8,
        None if text == "unterminated quoted connection parameter value" => UrlFault::UnterminatedQuote,
        None if is_url && text == "unterminated parameter" => UrlFault::ParameterWithoutValue,
        None if is_url => UrlFault::MalformedUrl,
        None => UrlFault::NotKeyValue,
    };
    PgError::BadUrl(fault)
}

/// [`parse_url`] with what a serving node's sessions need: keepalives, and an end to a
/// session left idle inside a batch.
pub fn parse_config(url: &str) -> Result<Config, PgError> {
    let mut config = parse_url(url)?;
    config.keepalives_idle(Duration::from_secs(5));
    // A node frozen inside a batch holds the head's lock: the database ends its session
    // after this long, so the other nodes go on and the frozen batch is never acknowledged.
    let timeout =
        format!("-c idle_in_transaction_session_timeout={}", crate::IDLE_IN_BATCH_TIMEOUT.as_millis());
    let options = match config.get_options() {
        Some(given) if given.contains("idle_in_transaction_session_timeout") => given.to_owned(),
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config.options(&options);
    Ok(config)
}

pub(crate) fn connect(config: &Config) -> Result<Client, PgError> {
    config.connect(NoTls).map_err(|e| PgError::Connect(describe(&e)))
}

fn unavailable(error: postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Diverged(format!("negative size {value}")))
}

fn to_hash(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Diverged("a stored hash is not 32 bytes".into()))
}

impl PgStore {
    /// Connects and brings the schema up to date ([`crate::schema::migrate`]).
    pub fn connect(url: &str) -> Result<Self, PgError> {
        let config = parse_config(url)?;
        let mut client = connect(&config)?;
        crate::schema::migrate(&mut client)?;
        Ok(Self { config, client: Some(client), in_batch: false, follow_every: Duration::from_secs(1) })
    }

    /// The connection's configuration (for the listener's own connection).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ledger's identity, if initialised.
    pub fn identity(&mut self) -> Result<Option<crate::identity::Identity>, PgError> {
        crate::identity::read(self.client_or_connect()?)
    }

    /// Creates the ledger's identity and empty head (see [`crate::identity::create`]).
    pub fn create(
        &mut self,
        identity: &crate::identity::Identity,
        hash: keyledger_verify::merkle::TreeHash,
    ) -> Result<(), PgError> {
        crate::identity::create(self.client_or_connect()?, identity, hash)
    }

    fn client_or_connect(&mut self) -> Result<&mut Client, PgError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.config)?);
        }
        self.client.as_mut().ok_or_else(|| PgError::Connect("no connection".into()))
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        match self.client.as_mut() {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Err(StoreError::Unavailable("the connection to the database is closed".into())),
        }
    }

    /// Runs `op` on the connection; a failure that closed the connection drops it.
    fn run<T>(
        &mut self,
        op: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let result = op(self.client()?);
        if result.is_err() && self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        result.map_err(unavailable)
    }
    /// Inside [`LogStore::begin`]'s transaction: locks the head row and reads the events
    /// other nodes appended after `local_len`.
    fn read_foreign(&mut self, local_len: u64) -> Result<Foreign, StoreError> {
        let row = self.run(|c| c.query_one("SELECT size, root FROM keyledger_head FOR UPDATE", &[]))?;
        let head = Head { size: to_u64(row.get(0))?, root: to_hash(row.get(1))? };
        if head.size <= local_len {
            return Ok(Foreign { head: Some(head), records: Vec::new() });
        }
        if head.size - local_len > BEGIN_LIMIT {
            return Err(StoreError::Behind { behind: head.size - local_len });
        }
        let (from, to) = (local_len as i64, head.size as i64);
        let rows = self.run(|c| {
            c.query(
                "SELECT record FROM keyledger_events WHERE seq >= $1 AND seq < $2 ORDER BY seq",
                &[&from, &to],
            )
        })?;
        if rows.len() as u64 != head.size - local_len {
            return Err(StoreError::Diverged(format!(
                "the head is at {} but the events from {local_len} stop after {}",
                head.size,
                rows.len()
            )));
        }
        Ok(Foreign { head: Some(head), records: rows.into_iter().map(|row| row.get(0)).collect() })
    }
}

impl LogStore for PgStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn begin(&mut self, local_len: u64) -> Result<Foreign, StoreError> {
        if self.in_batch {
            self.abort();
        }
        self.run(|c| c.batch_execute("BEGIN"))?;
        self.in_batch = true;
        // Whatever goes wrong after the head row is locked rolls back at once: a node that
        // kept the lock while it failed would stop every other node's writes.
        let foreign = self.read_foreign(local_len);
        if foreign.is_err() {
            self.abort();
        }
        foreign
    }

    fn commit(
        &mut self,
        first: u64,
        records: &[Vec<u8>],
        leaves: &[Hash],
        after: &Frontier,
    ) -> Result<(), StoreError> {
        if !self.in_batch {
            return Err(StoreError::Unavailable("commit without a batch".into()));
        }
        if !records.is_empty() {
            let seqs: Vec<i64> = (first..).take(records.len()).map(|seq| seq as i64).collect();
            let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let leaves: Vec<&[u8]> = leaves.iter().map(|leaf| leaf.as_slice()).collect();
            let frontier: Vec<u8> = after.peaks().concat();
            let (size, root) = (after.size() as i64, after.root());
            let notice = size.to_string();
            self.run(|c| {
                c.execute(
                    "WITH appended AS (
                        INSERT INTO keyledger_events (seq, record, leaf)
                        SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])
                     ), head AS (
                        UPDATE keyledger_head SET size = $4, root = $5, frontier = $6
                     )
                     SELECT pg_notify('keyledger_log', $7)",
                    &[&seqs, &records, &leaves, &size, &root.as_slice(), &frontier, &notice],
                )
            })?;
        }
        // An error from here on may hide a commit that happened: the writer refuses its
        // callers and learns the outcome by following the store after reconnecting.
        self.in_batch = false;
        self.run(|c| c.batch_execute("COMMIT"))
    }

    fn abort(&mut self) {
        if std::mem::take(&mut self.in_batch) {
            let _ = self.run(|c| c.batch_execute("ROLLBACK"));
        }
    }

    fn follow(&mut self, local_len: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let (from, limit) = (local_len as i64, limit as i64);
        let rows = self.run(|c| {
            c.query(
                "SELECT seq, record FROM keyledger_events WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&from, &limit],
            )
        })?;
        let mut records = Vec::with_capacity(rows.len());
        for (expected, row) in (local_len..).zip(rows) {
            let seq: i64 = row.get(0);
            if to_u64(seq)? != expected {
                return Err(StoreError::Diverged(format!("the store has no event {expected}")));
            }
            records.push(row.get(1));
        }
        Ok(records)
    }

    fn follow_every(&self) -> Option<Duration> {
        Some(self.follow_every)
    }

    fn latest_checkpoint(&mut self) -> Result<Option<SharedCheckpoint>, StoreError> {
        let row = self.run(|c| {
            c.query_opt(
                "SELECT size, root, note, EXTRACT(EPOCH FROM now() - signed_at)::float8
                 FROM keyledger_checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
        })?;
        let Some(row) = row else { return Ok(None) };
        let age: f64 = row.get(3);
        Ok(Some(SharedCheckpoint {
            size: to_u64(row.get(0))?,
            root: to_hash(row.get(1))?,
            note: row.get(2),
            age: Duration::try_from_secs_f64(age.max(0.0)).unwrap_or_default(),
        }))
    }

    fn store_checkpoint(&mut self, size: u64, root: Hash, note: &str) -> Result<(), StoreError> {
        let size = size as i64;
        let inserted = self.run(|c| {
            c.execute(
                "INSERT INTO keyledger_checkpoints (size, root, note) VALUES ($1, $2, $3)
                 ON CONFLICT (size) DO NOTHING",
                &[&size, &root.as_slice(), &note],
            )
        })?;
        if inserted == 1 {
            return Ok(());
        }
        let row =
            self.run(|c| c.query_one("SELECT root FROM keyledger_checkpoints WHERE size = $1", &[&size]))?;
        if to_hash(row.get(0))? == root {
            Ok(())
        } else {
            Err(StoreError::Diverged(format!("the store holds another root for size {size}")))
        }
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        self.in_batch = false;
        self.client = None;
        self.client = Some(connect(&self.config).map_err(|e| StoreError::Unavailable(e.to_string()))?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_string_is_named_by_its_fault_never_by_its_text() {
        for (url, reason) in [
            ("postgres://user:s3cretpw@host:notaport/db", "invalid value for option `port`"),
            ("postgres://user:s3cretpw@host/db?sslmode=s3cretpw", "invalid value for option `sslmode`"),
            ("postgres://user:s3cretpw@host/db?s3cretpw=1", "an option it names is unknown"),
            ("password=s3cretpw connect_timeout=s3cretpw", "invalid value for option `connect_timeout`"),
            ("password='s3cretpw", "unterminated quoted connection parameter value"),
            ("postgres://user:s3cretpw@[::1/db", "invalid value for option `host`"),
            ("postgres://u:s3cretpw@h/db?bogus=1", "an option it names is unknown"),
            ("password=s3cretpw port=x", "invalid value for option `port`"),
            // A URL's faults are named as a URL's, not as text that is no connection string.
            ("postgres://user:s3cretpw@host/db%ff", "a %-escape in it does not decode to UTF-8"),
            ("postgresql://user:s3cretpw@host/db?s3cretpw", "a parameter after `?` has no `=`"),
            ("password=s3cretpw s3cretpw", "it is neither a postgres:// URL nor key=value pairs"),
            ("password=s3cretpw port=", "it is neither a postgres:// URL nor key=value pairs"),
        ] {
            let error = parse_url(url).expect_err(url);
            let (shown, debug) = (error.to_string(), format!("{error:?}"));
            assert!(shown.ends_with(reason), "{url}: {shown}");
            for text in ["s3cretpw", url] {
                assert!(!shown.contains(text) && !debug.contains(text), "{url}: {shown} / {debug}");
            }
        }
    }

    #[test]
    fn a_connection_string_is_told_from_a_path_by_its_form() {
        for text in [
            "postgres://keeper@db.example/ledger",
            "postgresql://db.example",
            "host=db1,db2 dbname=ledger",
            "hostaddr=10.0.0.7 dbname=ledger password=s3cretpw",
            "dbname=ledger host = db.example",
            "port=notaport password=s3cretpw",
        ] {
            assert!(is_connection_string(text), "{text}");
        }
        for text in ["./keyledger-data", "/var/lib/keyledger", "data/ghost=1", "keyledger data", ""] {
            assert!(!is_connection_string(text), "{text}");
        }
    }
}
