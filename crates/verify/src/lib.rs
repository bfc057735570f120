//! The offline verifier of keyledger: Merkle proofs ([`merkle`]), signed checkpoints ([`note`]),
//! witness cosignatures ([`cosignature`]), offline proof bundles of one event ([`proof_bundle`]),
//! the log-format transition note ([`transition`]), exports ([`export`]) and compliance
//! reports ([`report`]).
//!
//! It has few dependencies so that an auditor can build it and read it alone, without the
//! server, its storage or its runtime.
#![forbid(unsafe_code)]
pub mod cosignature;
pub mod export;
pub mod merkle;
pub mod note;
pub mod proof_bundle;
pub mod report;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transition;
