//! Witness cosigning: every new checkpoint the log signs is submitted to the configured
//! witnesses (C2SP [tlog-witness](https://c2sp.org/tlog-witness) `add-checkpoint`), and
//! their cosignatures are verified, stored beside the checkpoints and served with the
//! checkpoint (docs/operations.md, "Witnesses"; docs/api.md, "Integrity").
//!
//! - [`policy`]: which witnesses, and the quorum (flags or a tlog-policy file).
//! - [`service`]: one submitter thread per witness, the shared view of what was cosigned,
//!   and fork alarms.
//!
//! Guarantees: appends never wait for a witness (the threads only read the latest stored
//! checkpoint); state is bounded (only the latest checkpoint is ever pending, per witness;
//! one stored cosigned checkpoint; a fixed set of counters per configured witness); a
//! cosignature is kept only if it verifies under that witness's key over the very
//! checkpoint the log signed; a witness claiming a larger tree than the log has, or signing
//! something other than the log's checkpoint under its own key, raises a fork alarm (an
//! error log line, a metric, a `log.fork_alarm` webhook, and the console banner).

pub mod policy;
pub(crate) mod service;

pub use policy::{PolicyError, QuorumRule, Witness, WitnessPolicy};
pub use service::{CosignedCheckpoint, ForkAlarm, WitnessCountersView, WitnessStatus, WitnessView};

use std::time::Duration;

/// Failure classes of a submission, the closed label set of
/// `keyledger_witness_submission_failures_total` (docs/operations.md, "Witnesses").
pub const FAILURE_CLASSES: [&str; 9] = [
    "connection_failed",
    "timeout",
    "forbidden",
    "unknown_log",
    "unprocessable",
    "conflict",
    "server_error",
    "bad_response",
    "unexpected_status",
];

/// How the witnesses are asked. The defaults suit production; tests shorten the delays.
#[derive(Clone, Debug)]
pub struct WitnessOptions {
    /// The witnesses and the quorum; `None` runs no submitter.
    pub policy: Option<WitnessPolicy>,
    /// How often a submitter looks for a new checkpoint.
    pub poll_interval: Duration,
    /// Delay after the first failed submission; each further failure doubles it, up to
    /// `max_delay`.
    pub first_retry: Duration,
    pub max_delay: Duration,
    /// Timeout of one `add-checkpoint` request, connection included.
    pub timeout: Duration,
}

impl Default for WitnessOptions {
    fn default() -> Self {
        Self {
            policy: None,
            poll_interval: Duration::from_millis(250),
            first_retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

impl WitnessOptions {
    /// The delay after `failures` consecutive failed submissions (from 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_retry.saturating_mul(factor).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = WitnessOptions {
            first_retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            ..WitnessOptions::default()
        };
        let delays: Vec<u64> = (1..=5).map(|f| options.backoff(f).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(options.backoff(500), Duration::from_secs(5));
    }
}
