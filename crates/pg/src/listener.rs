//! The follower's wake-up: `LISTEN keyledger_log` on a connection of its own.
//!
//! Every commit that appends notifies `keyledger_log`; the listener thread calls its
//! `wake` function for each burst of notifications, and once after every (re)connection
//! (notifications sent while it was disconnected are lost). It is only a latency
//! optimisation: the writer also follows the store every second by itself. The thread
//! reconnects after a failure (1 s apart) and stops when the [`Listener`] is stopped or
//! dropped.

use postgres::Config;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The running listener thread.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long the listener blocks before checking whether it was stopped.
const TICK: Duration = Duration::from_millis(200);

impl Listener {
    /// Starts listening with the connection settings `config`, calling `wake` on
    /// notifications.
    pub fn start(config: Config, wake: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keyledger-pg-listener".into())
            .spawn(move || run(&config, &stopped, &wake))?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it (at most about one tick).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(config: &Config, stop: &AtomicBool, wake: &dyn Fn()) {
    while !stop.load(Ordering::Acquire) {
        let mut client = match crate::store::connect(config) {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "the listener cannot connect; retrying");
                sleep_unless_stopped(stop, Duration::from_secs(1));
                continue;
            }
        };
        if let Err(error) = client.batch_execute("LISTEN keyledger_log") {
            tracing::debug!(error = %crate::error::describe(&error), "LISTEN failed; retrying");
            sleep_unless_stopped(stop, Duration::from_secs(1));
            continue;
        }
        wake();
        while !stop.load(Ordering::Acquire) && !client.is_closed() {
            // One wake-up per burst: the writer reads everything committed anyway.
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(TICK);
            if let Ok(Some(_)) = postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                wake();
            }
        }
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, duration: Duration) {
    let deadline = std::time::Instant::now() + duration;
    while !stop.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
        std::thread::sleep(TICK.min(duration));
    }
}
