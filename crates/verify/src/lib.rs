//! The offline verifier of keyledger: Merkle proofs ([`merkle`]), signed checkpoints ([`note`]),
//! the log-format transition note ([`transition`]), and exports ([`export`]).
//!
//! It has few dependencies so that an auditor can build it and read it alone, without the
//! server, its storage or its runtime.
#![forbid(unsafe_code)]
pub mod export;
pub mod merkle;
pub mod note;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transition;
