//! The writer's hand-off of durable batches to its subscriber (the projector): a queue bounded
//! in batches and in events.
//!
//! Why it exists: the writer never waits for its subscriber. A batch that does not fit is
//! not handed over (the writer counts it in `WriterStats::handoffs_skipped`) and the
//! subscriber, seeing the gap in seqs, reads those durable events from the log. A bound in
//! batches alone let a stalled subscriber's queue hold batches × the largest batch events
//! (a writer batch carries up to `WriterOptions::max_batch_commands` commands' events), so
//! its memory grew with the size of the bursts; here the events queued are bounded too,
//! whatever the batches' sizes.
//!
//! **Guarantees.** At most `max_batches` batches and `max_events` events are queued at any
//! time (a batch of more than `max_events` events is never queued); batches are received
//! in the order they were sent; sending never blocks.

use keyledger_core::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

/// A batch handed over: the writer's are `CommittedEvents`.
pub type Shared<T> = Arc<Vec<T>>;

/// A hand-off queue of at most `max_batches` batches and `max_events` events.
pub fn handoff<T>(max_batches: usize, max_events: usize) -> (HandoffSender<T>, HandoffReceiver<T>) {
    let (sender, receiver) = std::sync::mpsc::sync_channel(max_batches.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (HandoffSender { sender, queued: queued.clone(), max_events }, HandoffReceiver { receiver, queued })
}

/// Why a batch was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// The queue holds as many batches or events as it may.
    #[error("the subscriber's queue is full")]
    Full,
    /// The subscriber is gone.
    #[error("the subscriber is gone")]
    Disconnected,
}

/// The writer's end.
pub struct HandoffSender<T = Event> {
    sender: SyncSender<Shared<T>>,
    /// Events sent and not yet received.
    queued: Arc<AtomicUsize>,
    max_events: usize,
}

impl<T> HandoffSender<T> {
    /// Queues `batch` if it fits; never waits.
    pub fn try_send(&self, batch: Shared<T>) -> Result<(), HandoffError> {
        let len = batch.len();
        let fits = |queued: usize| queued.checked_add(len).filter(|&total| total <= self.max_events);
        if self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).is_err() {
            return Err(HandoffError::Full);
        }
        match self.sender.try_send(batch) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                Err(match error {
                    TrySendError::Full(_) => HandoffError::Full,
                    TrySendError::Disconnected(_) => HandoffError::Disconnected,
                })
            }
        }
    }
}

/// The subscriber's end.
pub struct HandoffReceiver<T = Event> {
    receiver: Receiver<Shared<T>>,
    queued: Arc<AtomicUsize>,
}

impl<T> HandoffReceiver<T> {
    /// The next batch, waiting up to `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Shared<T>, RecvTimeoutError> {
        self.receiver.recv_timeout(timeout).map(|batch| self.received(batch))
    }

    /// The next batch if one is queued.
    pub fn try_recv(&self) -> Result<Shared<T>, TryRecvError> {
        self.receiver.try_recv().map(|batch| self.received(batch))
    }

    fn received(&self, batch: Shared<T>) -> Shared<T> {
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: u64) -> Shared<u64> {
        Arc::new((0..events).collect())
    }

    #[test]
    fn the_events_queued_are_bounded_whatever_the_batches_sizes() {
        let (sender, receiver) = handoff(100, 10);
        assert_eq!(sender.try_send(batch(6)), Ok(()));
        assert_eq!(sender.try_send(batch(5)), Err(HandoffError::Full), "6 + 5 > 10 events");
        assert_eq!(sender.try_send(batch(4)), Ok(()), "6 + 4 fit");
        assert_eq!(sender.try_send(batch(1)), Err(HandoffError::Full));
        assert_eq!(receiver.try_recv().unwrap().len(), 6);
        assert_eq!(sender.try_send(batch(6)), Ok(()), "receiving made room");
        assert_eq!(sender.try_send(batch(11)), Err(HandoffError::Full), "never fits");
        let lens: Vec<usize> = std::iter::from_fn(|| receiver.try_recv().ok()).map(|b| b.len()).collect();
        assert_eq!(lens, [4, 6], "in the order sent");
    }

    #[test]
    fn the_batches_queued_are_bounded_and_a_refused_batch_takes_no_room() {
        let (sender, receiver) = handoff(2, 100);
        assert_eq!(sender.try_send(batch(1)), Ok(()));
        assert_eq!(sender.try_send(batch(1)), Ok(()));
        assert_eq!(sender.try_send(batch(50)), Err(HandoffError::Full), "two batches queued");
        receiver.recv_timeout(Duration::from_millis(10)).unwrap();
        receiver.recv_timeout(Duration::from_millis(10)).unwrap();
        assert_eq!(sender.try_send(batch(100)), Ok(()), "the refused batch's 50 events were given back");
        assert_eq!(receiver.try_recv().unwrap().len(), 100);
        drop(receiver);
        assert_eq!(sender.try_send(batch(1)), Err(HandoffError::Disconnected));
    }
}
