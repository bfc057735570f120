//! keyledger's witness: the server side of C2SP
//! [tlog-witness](https://c2sp.org/tlog-witness), cosigning with
//! [tlog-cosignature](https://c2sp.org/tlog-cosignature) v1 (Ed25519).
//!
//! An auditor runs a witness so that the log cannot show them one history and someone
//! else another: the witness cosigns a checkpoint only if it extends every checkpoint of
//! that log it cosigned before, and a verifier that requires its cosignature therefore sees
//! the same append-only log the witness saw (docs/witness.md). It is small on purpose: it
//! knows nothing of keyledger's storage or keys, only the log's public key and checkpoints.
//!
//! - [`request`]: the `add-checkpoint` body, parsed strictly.
//! - [`store`]: the witness directory (key, latest checkpoint per log), persisted atomically.
//! - [`witness`]: the decision (signature, old size, consistency proof, persist, cosign).
//! - [`http`]: the axum router and the spec's status codes and bodies.
#![forbid(unsafe_code)]

pub mod http;
pub mod request;
pub mod store;
pub mod witness;

pub use http::{router, serve};
pub use store::{Store, StoreError};
pub use witness::{AddError, LogConfig, OpenError, Witness};
