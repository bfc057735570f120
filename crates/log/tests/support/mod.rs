//! What the log's integration tests share: the origin and signing key of their logs, and the
//! one event a test sequencer records per command (a `used` event whose request id carries
//! the command's number, so a test can tell which command an event came from).
//!
//! Every test binary declares `mod support;` and uses the part it needs.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use keyledger_core::{Actor, KeyId, Payload, RequestId, Usage, UsageContext};
use keyledger_log::segment::SegmentReader;
use keyledger_log::{Batch, Sequencer};
use keyledger_verify::note::NoteSigner;

/// The origin line of every test log's checkpoints.
pub const ORIGIN: &str = "test.keyledger.invalid/log";

/// The checkpoint signer of every test log (a fixed key, so reopening verifies).
pub fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7; 32])).unwrap()
}

/// Pushes one `used` event for command `tag` (its number in the request id's last 8 bytes)
/// and returns the event's seq.
pub fn push_usage(tag: u64, batch: &mut Batch) -> u64 {
    let mut request = [0u8; 16];
    request[8..].copy_from_slice(&tag.to_be_bytes());
    let usage = Usage {
        key_id: KeyId::from_bytes([1; 16]),
        workspace: "acme".parse().unwrap(),
        context: UsageContext::default(),
    };
    batch.push(Actor::Verifier, RequestId::from_bytes(request), Payload::Used(usage)).seq
}

/// One `used` event per command, with no state to rewind.
pub struct Usages;

impl Sequencer for Usages {
    type Command = u64;
    type Reply = u64;

    fn sequence(&mut self, tag: u64, batch: &mut Batch) -> u64 {
        push_usage(tag, batch)
    }

    fn rewind(&mut self, _: &SegmentReader, _: u64) -> Result<(), String> {
        Ok(())
    }
}
