//! Leases: jobs that run on exactly one node at a time (webhook delivery, witness
//! submission), taken over within seconds when their node dies.
//!
//! A lease is a row of `keyledger_leases` (name, holder, expires_at). A [`Lease`] thread
//! tries every [`LeaseTimes::renew_every`] to take or renew it with one conditional upsert:
//! it succeeds if the row is free, already this node's, or expired, and then sets
//! `expires_at = now() + term`. Only the database's clock decides expiry (`now()`), so node
//! clocks may be wrong by any amount; the one assumption is that the node's and the
//! database's clocks *run at the same rate* over one term (seconds).
//!
//! **Fence.** A node considers itself the holder only until `sent + term - margin`, where
//! `sent` is its monotonic clock read before the upsert was sent: the row's expiry is at least
//! `sent + term` in database time, so a node that cannot renew (database unreachable,
//! process paused) stops its jobs at least `margin` before another node can take the lease.
//! A job that was already under way when the fence fell (one HTTP attempt) may still finish:
//! delivery is at least once, and receivers deduplicate by the delivery id.

use postgres::Config;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a lease lasts and how often it is renewed.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimes {
    /// The lease's term: `expires_at = now() + term` at each renewal.
    pub term: Duration,
    /// How often the holder renews (and a non-holder tries to take it).
    pub renew_every: Duration,
    /// How long before the term runs out (by this node's clock) the holder stops its jobs.
    pub margin: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        Self {
            term: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            margin: Duration::from_secs(2),
        }
    }
}

/// Whether this node holds the lease, as the lease thread last learned it.
#[derive(Clone, Default)]
pub struct Holding {
    /// Until when (this node's monotonic clock) the jobs may run.
    until: Arc<Mutex<Option<Instant>>>,
}

impl Holding {
    /// True while this node holds the lease, fenced (see the module docs).
    pub fn is_held(&self) -> bool {
        self.until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|until| Instant::now() < until)
    }

    fn set(&self, until: Option<Instant>) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// A lease thread: takes and renews the lease `name` for `holder`.
pub struct Lease {
    holding: Holding,
    stop: Arc<AtomicBool>,
    /// Whether stopping releases the lease.
    release: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Starts trying to take the lease `name` as `holder` (a name unique to this node).
    pub fn start(config: Config, name: &str, holder: String, times: LeaseTimes) -> std::io::Result<Self> {
        let holding = Holding::default();
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(true));
        let (held, stopped, releasing, name) =
            (holding.clone(), stop.clone(), release.clone(), name.to_owned());
        let thread = std::thread::Builder::new()
            .name(format!("keyledger-lease-{name}"))
            .spawn(move || run(&config, &name, &holder, times, &held, &stopped, &releasing))?;
        Ok(Self { holding, stop, release, thread: Some(thread) })
    }

    /// Whether this node holds the lease now.
    pub fn holding(&self) -> Holding {
        self.holding.clone()
    }

    /// Stops renewing and releases the lease if held (another node may take it at once).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops renewing without releasing, as a node that dies does: the lease stays taken
    /// until its term runs out, and this node's fence falls `margin` before that.
    pub fn abandon(mut self) -> Holding {
        self.release.store(false, Ordering::Release);
        self.stop();
        self.holding.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A name for this node's leases: unique per process.
pub fn node_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("node-{}-{:x}", std::process::id(), nanos)
}

const TAKE: &str = "INSERT INTO keyledger_leases (name, holder, expires_at)
     VALUES ($1, $2, now() + make_interval(secs => $3))
     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
     WHERE keyledger_leases.holder = EXCLUDED.holder OR keyledger_leases.expires_at < now()";

fn run(
    config: &Config,
    name: &str,
    holder: &str,
    times: LeaseTimes,
    held: &Holding,
    stop: &AtomicBool,
    release: &AtomicBool,
) {
    let mut client: Option<postgres::Client> = None;
    let term = times.term.as_secs_f64();
    while !stop.load(Ordering::Acquire) {
        let sent = Instant::now();
        if client.as_ref().is_none_or(postgres::Client::is_closed) {
            client = crate::store::connect(config).ok();
        }
        let taken = client.as_mut().map(|c| c.execute(TAKE, &[&name, &holder, &term]));
        match taken {
            Some(Ok(1)) => {
                if !held.is_held() {
                    tracing::info!(lease = name, "this node took the lease");
                }
                held.set(Some(sent + times.term.saturating_sub(times.margin)));
            }
            Some(Ok(_)) => held.set(None),
            // Not renewed: the fence falls by itself when the term runs out.
            Some(Err(error)) => {
                tracing::warn!(lease = name, error = %crate::error::describe(&error), "cannot renew the lease");
                client = None;
            }
            None => tracing::warn!(lease = name, "cannot reach the database to renew the lease"),
        }
        let next = sent + times.renew_every;
        while !stop.load(Ordering::Acquire) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(times.renew_every));
        }
    }
    if !release.load(Ordering::Acquire) {
        return;
    }
    if held.is_held()
        && let Some(client) = client.as_mut()
    {
        held.set(None);
        let _ =
            client.execute("DELETE FROM keyledger_leases WHERE name = $1 AND holder = $2", &[&name, &holder]);
    }
}
