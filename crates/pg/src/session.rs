//! [`Session`]: one connection of its own for a side job (witness records, webhook
//! attempts), opened on first use and again after a failure closed it.
//!
//! Like every synchronous client here it is used from threads of its own, never from an async
//! runtime's; calls are serialised by its lock, so one node's statements through one session
//! commit in the order they were made.

use crate::error::PgError;
use postgres::{Client, Config};
use std::sync::Mutex;

/// A lazily opened connection to the database `config` connects to.
pub(crate) struct Session {
    config: Config,
    client: Mutex<Option<Client>>,
}

impl Session {
    pub(crate) fn new(config: Config) -> Self {
        Self { config, client: Mutex::new(None) }
    }

    /// Runs `op` on the connection, connecting first if needed (a failure to connect is
    /// given to `unreachable`); a failure that closed the connection drops it, and the next
    /// call reconnects.
    pub(crate) fn run<T, E>(
        &self,
        unreachable: impl FnOnce(PgError) -> E,
        op: impl FnOnce(&mut Client) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let client = match slot.as_mut() {
            Some(client) if !client.is_closed() => client,
            _ => slot.insert(crate::store::connect(&self.config).map_err(unreachable)?),
        };
        let result = op(client);
        if result.is_err() && client.is_closed() {
            *slot = None;
        }
        result
    }
}

impl Drop for Session {
    /// Closes the connection on a thread of its own: the synchronous client cannot be
    /// dropped on an async runtime's thread, where an engine may be dropped.
    fn drop(&mut self) {
        let client = self.client.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(client) = client {
            std::thread::scope(|s| {
                s.spawn(move || drop(client));
            });
        }
    }
}
