//! The naive RFC 9162 reference for tests (the `testing` feature): `PATH` and `PROOF`
//! straight from the RFC's recursive definitions (sections 2.1.3.1 and 2.1.4.1), over a
//! list of leaf hashes in memory, hashed with the given [`TreeHash`]. Slow and obviously right, so that the proof generators
//! (`keyledger-log`'s `proof` module) and the verifiers ([`crate::merkle`]) are both
//! tested against one reading of the RFC.

use crate::merkle::{Hash, TreeHash};

/// The largest power of two strictly smaller than `n` (`n` ≥ 2), the RFC's `k`.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `PATH(m, D[n])`: the audit path of leaf `m` in the tree of the leaves `d`.
#[must_use]
pub fn path(hash: TreeHash, m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = split(d.len());
    if m < k {
        let mut p = path(hash, m, &d[..k]);
        p.push(hash.root_from_leaves(&d[k..]));
        p
    } else {
        let mut p = path(hash, m - k, &d[k..]);
        p.push(hash.root_from_leaves(&d[..k]));
        p
    }
}

/// `PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`: the consistency proof from the tree of the
/// first `m` leaves to the tree of `d`, with the empty proof for `m` = 0 (which the RFC
/// leaves undefined).
#[must_use]
pub fn proof(hash: TreeHash, m: usize, d: &[Hash]) -> Vec<Hash> {
    if m == 0 { Vec::new() } else { subproof(hash, m, d, true) }
}

/// `SUBPROOF(m, D[n], b)`.
fn subproof(hash: TreeHash, m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    if m == d.len() {
        return if b { Vec::new() } else { vec![hash.root_from_leaves(d)] };
    }
    let k = split(d.len());
    if m <= k {
        let mut p = subproof(hash, m, &d[..k], b);
        p.push(hash.root_from_leaves(&d[k..]));
        p
    } else {
        let mut p = subproof(hash, m - k, &d[k..], false);
        p.push(hash.root_from_leaves(&d[..k]));
        p
    }
}
