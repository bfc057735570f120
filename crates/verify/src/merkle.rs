//! Merkle tree hashing and proof verification: RFC 6962 / RFC 9162 section 2.1, with the
//! hash function a parameter ([`TreeHash`]).
//!
//! # Why this module exists
//!
//! keyledger's event log is an append-only Merkle tree. Everything an auditor needs to
//! check it — that an event is in a signed tree ([`verify_inclusion`]) and that a later
//! tree extends an earlier one without rewriting history ([`verify_consistency`]) — is
//! here, in one small file depending only on `sha2`, `blake3` and `thiserror`, so it can be
//! read and re-implemented independently. The server generates proofs with the same hashing
//! (`keyledger-log`'s `proof` module); this module only checks them.
//!
//! # Which hash
//!
//! Log format 2 hashes exactly as RFC 6962 does, with SHA-256 ([`TreeHash::Rfc6962`]), so
//! that standard transparency-log clients, tlog-tiles readers and witnesses can check it
//! (docs/log-format.md, "Tree hashing"). Format 1 used BLAKE3 in the same construction
//! ([`TreeHash::Blake3`]); it is kept only so that format-1 logs and old exports can still
//! be verified, and upgraded (docs/decisions/0007-sha256-tree-for-interoperability.md).
//! There is one implementation of the tree, its frontier and its proofs; only the three
//! primitives below depend on the hash.
//!
//! # What it guarantees
//!
//! * Hashing is exactly RFC 9162 section 2.1 with `HASH` = SHA-256 (or, format 1, BLAKE3-256):
//!   * `MTH({}) = HASH()` ([`TreeHash::empty_root`]),
//!   * `MTH({d0}) = HASH(0x00 || d0)` ([`TreeHash::leaf`]),
//!   * `MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))` with `k` the largest power
//!     of two smaller than `n` ([`TreeHash::node`], [`TreeHash::root_from_leaves`]).
//!
//!   The distinct leaf/node prefixes keep a leaf from ever being confused with an
//!   interior node (second-preimage resistance).
//! * [`verify_inclusion`] and [`verify_consistency`] follow the algorithms of RFC 9162
//!   sections 2.1.3.2 and 2.1.4.2 step for step, including their checks that the proof
//!   has exactly the expected length.
//! * No function here panics on any input (except [`Frontier::push`] on a tree that
//!   already holds `u64::MAX` leaves): bad indices, sizes, and proof lengths are
//!   reported as a [`ProofError`].
//! * [`Frontier`] keeps the compact range of a growing tree (one subtree root per set
//!   bit of its size), so the root of a log can be maintained while appending with
//!   amortised O(1) hashing per leaf and O(log n) memory.
//!
//! # Example
//!
//! ```
//! use keyledger_verify::merkle::{Frontier, TreeHash, verify_inclusion};
//!
//! let hash = TreeHash::Rfc6962;
//! let leaves: Vec<_> = [&b"a"[..], b"b", b"c"].iter().map(|event| hash.leaf(event)).collect();
//! let mut tree = Frontier::new(hash);
//! for leaf in &leaves {
//!     tree.push(*leaf);
//! }
//! // In a 3-leaf tree, the audit path of leaf 2 is the root of leaves 0 and 1.
//! let proof = [hash.node(&leaves[0], &leaves[1])];
//! assert_eq!(verify_inclusion(hash, 2, 3, &leaves[2], &proof, &tree.root()), Ok(()));
//! assert!(verify_inclusion(hash, 1, 3, &leaves[2], &proof, &tree.root()).is_err());
//! ```

use sha2::Digest as _;

/// A 32-byte digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of leaf hashes (RFC 9162 section 2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes (RFC 9162 section 2.1.1).
const NODE_PREFIX: u8 = 0x01;

/// Why a proof, or a frontier's parts, were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof was asked for a leaf index outside the tree.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("a tree of size {size1} cannot be a prefix of a smaller tree of size {size2}")]
    SizesOutOfOrder {
        /// The (older) first tree size.
        size1: u64,
        /// The (newer) second tree size.
        size2: u64,
    },
    /// The proof has more hashes than the tree shape allows.
    #[error("proof has too many hashes for this tree shape")]
    ProofTooLong,
    /// The proof has fewer hashes than the tree shape requires.
    #[error("proof has too few hashes for this tree shape")]
    ProofTooShort,
    /// The proof should have been empty (equal sizes, or an empty first tree) but was not.
    #[error("proof must be empty for these tree sizes but has {len} hashes")]
    UnexpectedProof {
        /// How many hashes the proof had.
        len: usize,
    },
    /// The root recomputed from an inclusion proof differs from the expected root.
    #[error("recomputed root does not match the expected root")]
    RootMismatch,
    /// The first tree's root recomputed from a consistency proof differs from the one given.
    #[error("recomputed root of the first tree does not match its expected root")]
    FirstRootMismatch,
    /// The second tree's root recomputed from a consistency proof differs from the one given.
    #[error("recomputed root of the second tree does not match its expected root")]
    SecondRootMismatch,
    /// A subtree was appended to a compact range where it cannot start.
    #[error("a subtree of 2^{level} leaves cannot start at leaf {at}")]
    Misaligned {
        /// The subtree's level.
        level: u32,
        /// The leaf where it would start.
        at: u64,
    },
    /// A frontier's peak count does not match its size.
    #[error("a tree of size {size} has {expected} peaks, got {actual}")]
    PeakCount {
        /// The tree size given.
        size: u64,
        /// The number of set bits of `size`.
        expected: u32,
        /// The number of peaks given.
        actual: usize,
    },
}

/// The hash function of the tree: the one thing that differs between log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeHash {
    /// RFC 6962 exactly: SHA-256. Log format 2, and every export that says
    /// `"tree_hash": "sha256"`.
    Rfc6962,
    /// The same construction with BLAKE3-256: log format 1, kept to verify and upgrade
    /// format-1 logs and to verify old exports (those without a `tree_hash`).
    Blake3,
}

impl TreeHash {
    /// The name exports and tree files record: `sha256` or `blake3`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TreeHash::Rfc6962 => "sha256",
            TreeHash::Blake3 => "blake3",
        }
    }

    /// The hash named `name` ([`Self::name`]), if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [TreeHash::Rfc6962, TreeHash::Blake3].into_iter().find(|hash| hash.name() == name)
    }

    /// The log format that hashes its tree this way: 2 for SHA-256, 1 for BLAKE3.
    #[must_use]
    pub fn log_format(self) -> u32 {
        match self {
            TreeHash::Rfc6962 => 2,
            TreeHash::Blake3 => 1,
        }
    }

    /// The tree hash of log format `format`, if it is one.
    #[must_use]
    pub fn of_log_format(format: u32) -> Option<Self> {
        [TreeHash::Rfc6962, TreeHash::Blake3].into_iter().find(|hash| hash.log_format() == format)
    }

    /// `HASH(parts[0] || parts[1] || …)`.
    fn digest(self, parts: &[&[u8]]) -> Hash {
        match self {
            TreeHash::Rfc6962 => {
                let mut hasher = sha2::Sha256::new();
                parts.iter().for_each(|part| hasher.update(part));
                hasher.finalize().into()
            }
            TreeHash::Blake3 => {
                let mut hasher = blake3::Hasher::new();
                parts.iter().for_each(|part| {
                    hasher.update(part);
                });
                *hasher.finalize().as_bytes()
            }
        }
    }

    /// The hash of a leaf: `HASH(0x00 || event_bytes)`.
    #[must_use]
    pub fn leaf(self, event_bytes: &[u8]) -> Hash {
        self.digest(&[&[LEAF_PREFIX], event_bytes])
    }

    /// The hash of an interior node: `HASH(0x01 || left || right)`.
    #[must_use]
    pub fn node(self, left: &Hash, right: &Hash) -> Hash {
        self.digest(&[&[NODE_PREFIX], left, right])
    }

    /// The root of the empty tree: the hash of the empty string.
    #[must_use]
    pub fn empty_root(self) -> Hash {
        self.digest(&[])
    }

    /// The Merkle tree hash `MTH` of a list of leaf hashes, by the recursive definition of
    /// RFC 9162 section 2.1.1 (this is the reference; [`Frontier`] computes the same value
    /// incrementally).
    #[must_use]
    pub fn root_from_leaves(self, leaves: &[Hash]) -> Hash {
        match leaves {
            [] => self.empty_root(),
            [leaf] => *leaf,
            _ => {
                // A slice never holds more than `u64::MAX` elements, and the split point is
                // below its length, so both conversions are lossless.
                let k = split_point(leaves.len() as u64) as usize;
                self.node(&self.root_from_leaves(&leaves[..k]), &self.root_from_leaves(&leaves[k..]))
            }
        }
    }
}

/// The largest power of two strictly smaller than `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// A compact range `[begin, size)` of a Merkle tree: the roots of the maximal aligned
/// perfect subtrees ("peaks") covering it, left to right. Starting at leaf 0 (the usual
/// case) it is the frontier of the tree of `size` leaves: one peak per set bit of its
/// size, largest first, from which the tree's root follows. Starting elsewhere it is a
/// piece of a tree that can be appended to the frontier it continues ([`Frontier::append`]),
/// which is how an export's lines are proven to be a contiguous run of leaves.
///
/// Appending a leaf merges equal-sized peaks like a binary counter, so [`Frontier::push`]
/// costs amortised O(1) hashes, and [`Frontier::root`] folds at most 64 peaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    hash: TreeHash,
    begin: u64,
    size: u64,
    peaks: Vec<Hash>,
    /// The level of each peak (a peak of level `l` is the root of `2^l` leaves).
    levels: Vec<u32>,
}

impl Frontier {
    /// An empty tree hashed with `hash`.
    #[must_use]
    pub fn new(hash: TreeHash) -> Self {
        Self::starting_at(hash, 0)
    }

    /// An empty range starting at leaf `begin`, to which leaves `begin, begin + 1, …` are
    /// then appended.
    #[must_use]
    pub fn starting_at(hash: TreeHash, begin: u64) -> Self {
        Self { hash, begin, size: begin, peaks: Vec::new(), levels: Vec::new() }
    }

    /// Rebuilds a frontier from a stored size and its peaks (largest subtree first).
    ///
    /// # Errors
    ///
    /// [`ProofError::PeakCount`] if there is not exactly one peak per set bit of `size`.
    pub fn from_parts(hash: TreeHash, size: u64, peaks: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones();
        if peaks.len() != expected as usize {
            return Err(ProofError::PeakCount { size, expected, actual: peaks.len() });
        }
        let levels = (0..u64::BITS).rev().filter(|l| size & (1u64 << l) != 0).collect();
        Ok(Self { hash, begin: 0, size, peaks, levels })
    }

    /// Appends a leaf hash.
    ///
    /// # Panics
    ///
    /// If the tree already holds `u64::MAX` leaves (unreachable by appending).
    pub fn push(&mut self, leaf: Hash) {
        self.push_subtree(0, leaf).expect("a Merkle tree cannot hold more than u64::MAX leaves");
    }

    /// Appends the root of the aligned perfect subtree of `2^level` leaves that starts at
    /// leaf `size()`.
    ///
    /// # Errors
    ///
    /// [`ProofError::Misaligned`] if no such subtree starts there (or it would pass leaf
    /// `u64::MAX`); the range is then unchanged.
    pub fn push_subtree(&mut self, level: u32, hash: Hash) -> Result<(), ProofError> {
        let misaligned = ProofError::Misaligned { level, at: self.size };
        let width = 1u64.checked_shl(level).filter(|_| level < u64::BITS).ok_or(misaligned.clone())?;
        if !self.size.is_multiple_of(width) {
            return Err(misaligned);
        }
        let new_size = self.size.checked_add(width).ok_or(misaligned)?;
        let (mut level, mut carry) = (level, hash);
        // Merge with the left sibling while it is the last peak (same level, and the
        // carry is a right child: an odd index at its level).
        while self.levels.last() == Some(&level) && (self.size >> level) & 1 == 1 {
            let (Some(left), Some(_)) = (self.peaks.pop(), self.levels.pop()) else {
                break;
            };
            carry = self.hash.node(&left, &carry);
            level += 1;
        }
        self.peaks.push(carry);
        self.levels.push(level);
        self.size = new_size;
        Ok(())
    }

    /// Appends the range `other`, which must start where this one ends and be hashed the
    /// same way.
    ///
    /// # Errors
    ///
    /// [`ProofError::Misaligned`] if `other` does not start at `size()`, is hashed with
    /// another [`TreeHash`], or one of its subtrees cannot follow; the range may then be
    /// partly extended.
    pub fn append(&mut self, other: &Frontier) -> Result<(), ProofError> {
        if other.begin != self.size || other.hash != self.hash {
            return Err(ProofError::Misaligned { level: 0, at: other.begin });
        }
        for (&level, hash) in other.levels.iter().zip(&other.peaks) {
            self.push_subtree(level, *hash)?;
        }
        Ok(())
    }

    /// The first leaf of the range (0 for the frontier of a whole tree).
    #[must_use]
    pub fn begin(&self) -> u64 {
        self.begin
    }

    /// The number of leaves up to the end of the range (the tree's size for a frontier).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree's root: the peaks folded right to left with [`TreeHash::node`], or
    /// [`TreeHash::empty_root`] for an empty tree. Equals [`TreeHash::root_from_leaves`] of the same leaves
    /// when the range starts at leaf 0.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&last) = peaks.next() else {
            return self.hash.empty_root();
        };
        peaks.fold(last, |right, left| self.hash.node(left, &right))
    }

    /// How the tree is hashed.
    #[must_use]
    pub fn tree_hash(&self) -> TreeHash {
        self.hash
    }

    /// The peaks, largest (leftmost) subtree first.
    #[must_use]
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }
}

/// Right-shifts `fn_` and `sn` together until `fn_` is odd or zero.
fn shift_while_even(fn_: &mut u64, sn: &mut u64) {
    while *fn_ != 0 && *fn_ & 1 == 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Checks an inclusion proof (an audit path) that `leaf` is the leaf at `index` of the
/// tree of `size` leaves with root `root`, by the algorithm of RFC 9162 section 2.1.3.2.
///
/// # Errors
///
/// [`ProofError::IndexOutOfRange`] if `index >= size`; [`ProofError::ProofTooLong`] or
/// [`ProofError::ProofTooShort`] if the proof's length does not fit the tree shape;
/// [`ProofError::RootMismatch`] if the recomputed root differs from `root`.
pub fn verify_inclusion(
    hash: TreeHash,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    // Step 1.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Steps 2 and 3.
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = hash.node(p, &r);
            if fn_ & 1 == 0 {
                shift_while_even(&mut fn_, &mut sn);
            }
        } else {
            r = hash.node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks a consistency proof that the tree of `size1` leaves with root `root1` is a
/// prefix of the tree of `size2` leaves with root `root2`, by the algorithm of RFC 9162
/// section 2.1.4.2.
///
/// The cases the RFC leaves out are defined as follows: equal sizes need an empty proof
/// and equal roots; an empty first tree is consistent with every tree given an empty
/// proof, provided `root1` is [`TreeHash::empty_root`] (the only root an empty tree has).
///
/// # Errors
///
/// [`ProofError::SizesOutOfOrder`] if `size1 > size2`; [`ProofError::UnexpectedProof`]
/// if the proof must be empty but is not; [`ProofError::ProofTooShort`] or
/// [`ProofError::ProofTooLong`] if its length does not fit the two tree shapes;
/// [`ProofError::RootMismatch`] if equal sizes have different roots (or an empty first
/// tree a root other than the empty root); [`ProofError::FirstRootMismatch`] or
/// [`ProofError::SecondRootMismatch`] if a recomputed root differs from the one given.
pub fn verify_consistency(
    hash: TreeHash,
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 || size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::UnexpectedProof { len: proof.len() });
        }
        if size1 == 0 && *root1 != hash.empty_root() {
            return Err(ProofError::RootMismatch);
        }
        if size1 == size2 && root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Step 1 (0 < size1 < size2 from here on).
    let Some((&first, rest)) = proof.split_first() else {
        return Err(ProofError::ProofTooShort);
    };
    // Step 2: for a power-of-two first tree, its root is the implicit first path entry.
    let (start, rest) = if size1.is_power_of_two() { (*root1, proof) } else { (first, rest) };
    // Step 3.
    let mut fn_ = size1 - 1;
    let mut sn = size2 - 1;
    // Step 4.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 5.
    let mut fr = start;
    let mut sr = start;
    // Step 6.
    for c in rest {
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = hash.node(c, &fr);
            sr = hash.node(c, &sr);
            if fn_ & 1 == 0 {
                shift_while_even(&mut fn_, &mut sn);
            }
        } else {
            sr = hash.node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // Step 7.
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if fr != *root1 {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *root2 {
        return Err(ProofError::SecondRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tlog_cross_check;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing as rfc;
    use proptest::prelude::*;

    const BOTH: [TreeHash; 2] = [TreeHash::Rfc6962, TreeHash::Blake3];

    fn leaves(hash: TreeHash, n: usize) -> Vec<Hash> {
        (0..n).map(|i| hash.leaf(&(i as u64).to_be_bytes())).collect()
    }

    fn sha256(bytes: &[u8]) -> Hash {
        sha2::Sha256::digest(bytes).into()
    }

    fn flip(mut h: Hash, bit: usize) -> Hash {
        h[(bit / 8) % 32] ^= 1 << (bit % 8);
        h
    }

    #[test]
    fn hashes_are_domain_separated() {
        let expected: [fn(&[u8]) -> Hash; 2] = [sha256, |bytes| *blake3::hash(bytes).as_bytes()];
        for (hash, digest) in BOTH.into_iter().zip(expected) {
            assert_eq!(hash.leaf(b"abc"), digest(b"\x00abc"));
            let (a, b) = (hash.leaf(b"a"), hash.leaf(b"b"));
            let mut concat = vec![0x01];
            concat.extend_from_slice(&a);
            concat.extend_from_slice(&b);
            assert_eq!(hash.node(&a, &b), digest(&concat));
            assert_eq!(hash.empty_root(), digest(b""));
            assert_ne!(hash.leaf(b""), hash.empty_root());
            assert_ne!(hash.node(&a, &b), hash.node(&b, &a));
        }
        assert_ne!(TreeHash::Rfc6962.leaf(b"a"), TreeHash::Blake3.leaf(b"a"));
    }

    #[test]
    fn names_and_formats_round_trip() {
        for hash in BOTH {
            assert_eq!(TreeHash::from_name(hash.name()), Some(hash));
            assert_eq!(TreeHash::of_log_format(hash.log_format()), Some(hash));
        }
        assert_eq!(TreeHash::Rfc6962.name(), "sha256");
        assert_eq!(TreeHash::Rfc6962.log_format(), 2);
        assert_eq!(TreeHash::from_name("SHA256"), None);
        assert_eq!(TreeHash::of_log_format(3), None);
    }

    /// The RFC 6962 test vectors of the Certificate Transparency reference implementations
    /// (the eight leaves and the roots of trees of 1 to 8 of them): an answer we did not
    /// compute ourselves.
    #[test]
    fn rfc6962_known_answers() {
        let hash = TreeHash::Rfc6962;
        assert_eq!(
            hex::encode(hash.empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(hash.leaf(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves: Vec<Hash> = data.iter().map(|d| hash.leaf(d)).collect();
        let mut frontier = Frontier::new(hash);
        for (n, expected) in roots.iter().enumerate() {
            frontier.push(leaves[n]);
            assert_eq!(hex::encode(frontier.root()), *expected, "size {}", n + 1);
            assert_eq!(hex::encode(hash.root_from_leaves(&leaves[..=n])), *expected);
        }
    }

    #[test]
    fn small_roots_follow_the_rfc_shape() {
        for hash in BOTH {
            let d = leaves(hash, 5);
            assert_eq!(hash.root_from_leaves(&[]), hash.empty_root());
            assert_eq!(hash.root_from_leaves(&d[..1]), d[0]);
            assert_eq!(hash.root_from_leaves(&d[..2]), hash.node(&d[0], &d[1]));
            assert_eq!(hash.root_from_leaves(&d[..3]), hash.node(&hash.node(&d[0], &d[1]), &d[2]));
            let four = hash.node(&hash.node(&d[0], &d[1]), &hash.node(&d[2], &d[3]));
            assert_eq!(hash.root_from_leaves(&d[..4]), four);
            assert_eq!(hash.root_from_leaves(&d), hash.node(&four, &d[4]));
        }
    }

    #[test]
    fn frontier_matches_root_from_leaves() {
        for hash in BOTH {
            let d = leaves(hash, 300);
            let mut frontier = Frontier::new(hash);
            assert_eq!(frontier.root(), hash.empty_root());
            for (i, leaf) in d.iter().enumerate() {
                frontier.push(*leaf);
                let size = i as u64 + 1;
                assert_eq!(frontier.size(), size);
                assert_eq!(frontier.peaks().len(), size.count_ones() as usize);
                assert_eq!(frontier.root(), hash.root_from_leaves(&d[..=i]), "size {size}");
                let rebuilt = Frontier::from_parts(hash, size, frontier.peaks().to_vec());
                assert_eq!(rebuilt.as_ref(), Ok(&frontier));
            }
        }
    }

    #[test]
    fn a_range_starting_anywhere_appends_to_the_frontier_before_it() {
        for hash in BOTH {
            let all = leaves(hash, 40);
            for first in 0..20usize {
                for last in first..30usize {
                    let mut left = Frontier::new(hash);
                    all[..first].iter().for_each(|leaf| left.push(*leaf));
                    let mut range = Frontier::starting_at(hash, first as u64);
                    all[first..=last].iter().for_each(|leaf| range.push(*leaf));
                    assert_eq!(range.begin(), first as u64);
                    let mut tree = Frontier::from_parts(hash, first as u64, left.peaks().to_vec()).unwrap();
                    tree.append(&range).unwrap();
                    assert_eq!(tree.root(), hash.root_from_leaves(&all[..=last]), "{first}..={last}");
                    assert_eq!(tree.size(), last as u64 + 1);
                }
            }
            let mut unaligned = Frontier::starting_at(hash, 1);
            assert_eq!(unaligned.push_subtree(1, [0; 32]), Err(ProofError::Misaligned { level: 1, at: 1 }));
            assert!(unaligned.push_subtree(64, [0; 32]).is_err());
            assert!(Frontier::new(hash).append(&Frontier::starting_at(hash, 3)).is_err());
            let mut full = Frontier::starting_at(hash, u64::MAX);
            assert!(full.push_subtree(0, [0; 32]).is_err());
        }
    }

    #[test]
    fn frontier_from_parts_checks_peak_count() {
        for hash in BOTH {
            assert_eq!(Frontier::from_parts(hash, 0, vec![]), Ok(Frontier::new(hash)));
            assert_eq!(
                Frontier::from_parts(hash, 3, vec![[0; 32]]),
                Err(ProofError::PeakCount { size: 3, expected: 2, actual: 1 })
            );
            assert!(Frontier::from_parts(hash, u64::MAX, vec![[0; 32]; 64]).is_ok());
            assert!(Frontier::from_parts(hash, 4, vec![[0; 32]; 2]).is_err());
        }
    }

    #[test]
    fn verifiers_accept_rfc_proofs_exhaustively_for_small_trees() {
        for hash in BOTH {
            let d = leaves(hash, 40);
            for n in 0..=d.len() {
                let tree = &d[..n];
                let root = hash.root_from_leaves(tree);
                for m in 0..n {
                    let path = rfc::path(hash, m, tree);
                    assert_eq!(
                        verify_inclusion(hash, m as u64, n as u64, &tree[m], &path, &root),
                        Ok(()),
                        "inclusion {m} in {n}"
                    );
                }
                for m in 0..=n {
                    let proof = rfc::proof(hash, m, tree);
                    let old_root = hash.root_from_leaves(&tree[..m]);
                    assert_eq!(
                        verify_consistency(hash, m as u64, n as u64, &old_root, &root, &proof),
                        Ok(()),
                        "consistency {m} -> {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn verifiers_reject_tampering_for_small_trees() {
        for hash in BOTH {
            let d = leaves(hash, 20);
            for n in 1..=d.len() {
                let tree = &d[..n];
                let root = hash.root_from_leaves(tree);
                for m in 0..n {
                    let path = rfc::path(hash, m, tree);
                    let (idx, size) = (m as u64, n as u64);
                    assert!(verify_inclusion(hash, idx, size, &flip(tree[m], 3), &path, &root).is_err());
                    assert!(verify_inclusion(hash, idx, size, &tree[m], &path, &flip(root, 9)).is_err());
                    for other in (0..n).filter(|&o| o != m) {
                        assert!(verify_inclusion(hash, other as u64, size, &tree[m], &path, &root).is_err());
                    }
                    for j in 0..path.len() {
                        let mut bad = path.clone();
                        bad[j] = flip(bad[j], j);
                        assert!(verify_inclusion(hash, idx, size, &tree[m], &bad, &root).is_err());
                    }
                    let mut longer = path.clone();
                    longer.push(root);
                    assert_eq!(
                        verify_inclusion(hash, idx, size, &tree[m], &longer, &root),
                        Err(ProofError::ProofTooLong)
                    );
                    if !path.is_empty() {
                        assert_eq!(
                            verify_inclusion(hash, idx, size, &tree[m], &path[1..], &root),
                            Err(ProofError::ProofTooShort)
                        );
                    }
                }
                for m in 1..n {
                    let proof = rfc::proof(hash, m, tree);
                    let old_root = hash.root_from_leaves(&tree[..m]);
                    let (s1, s2) = (m as u64, n as u64);
                    assert!(verify_consistency(hash, s1, s2, &flip(old_root, 1), &root, &proof).is_err());
                    assert!(verify_consistency(hash, s1, s2, &old_root, &flip(root, 2), &proof).is_err());
                    assert!(verify_consistency(hash, s2, s1, &root, &old_root, &proof).is_err());
                    for j in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[j] = flip(bad[j], j + 5);
                        assert!(verify_consistency(hash, s1, s2, &old_root, &root, &bad).is_err());
                    }
                    let mut longer = proof.clone();
                    longer.push(root);
                    assert!(verify_consistency(hash, s1, s2, &old_root, &root, &longer).is_err());
                    assert!(verify_consistency(hash, s1, s2, &old_root, &root, &proof[1..]).is_err());
                }
            }
        }
    }

    #[test]
    fn degenerate_consistency_cases() {
        for hash in BOTH {
            let r = hash.leaf(b"x");
            let e = hash.empty_root();
            assert_eq!(verify_consistency(hash, 0, 0, &e, &e, &[]), Ok(()));
            assert_eq!(verify_consistency(hash, 0, 9, &e, &r, &[]), Ok(()));
            assert_eq!(verify_consistency(hash, 0, 9, &r, &r, &[]), Err(ProofError::RootMismatch));
            assert_eq!(
                verify_consistency(hash, 0, 9, &e, &r, &[r]),
                Err(ProofError::UnexpectedProof { len: 1 })
            );
            assert_eq!(verify_consistency(hash, 5, 5, &r, &r, &[]), Ok(()));
            assert_eq!(verify_consistency(hash, 5, 5, &r, &e, &[]), Err(ProofError::RootMismatch));
            assert_eq!(
                verify_consistency(hash, 5, 5, &r, &r, &[r]),
                Err(ProofError::UnexpectedProof { len: 1 })
            );
            assert_eq!(
                verify_consistency(hash, 6, 5, &r, &r, &[]),
                Err(ProofError::SizesOutOfOrder { size1: 6, size2: 5 })
            );
            assert_eq!(verify_consistency(hash, 3, 5, &r, &r, &[]), Err(ProofError::ProofTooShort));
            assert_eq!(
                verify_inclusion(hash, 0, 0, &r, &[], &e),
                Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
            );
            assert_eq!(verify_inclusion(hash, 0, 1, &r, &[], &r), Ok(()));
        }
    }

    #[test]
    fn extreme_sizes_do_not_panic() {
        for hash in BOTH {
            let h = hash.leaf(b"h");
            let many = vec![h; 200];
            for size in [1, 2, u64::MAX - 1, u64::MAX] {
                for index in [0, 1, size / 2, size - 1, size, u64::MAX] {
                    for len in [0, 1, 63, 64, 65, 200] {
                        let _ = verify_inclusion(hash, index, size, &h, &many[..len], &h);
                    }
                }
            }
            for s1 in [0, 1, 2, u64::MAX / 2 + 1, u64::MAX - 1, u64::MAX] {
                for s2 in [0, 1, 3, u64::MAX - 1, u64::MAX] {
                    for len in [0, 1, 64, 65, 128, 200] {
                        let _ = verify_consistency(hash, s1, s2, &h, &h, &many[..len]);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn inclusion_rejects_arbitrary_input_without_panicking(
            index in any::<u64>(),
            size in any::<u64>(),
            leaf in any::<[u8; 32]>(),
            root in any::<[u8; 32]>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..130),
        ) {
            let hash = TreeHash::Rfc6962;
            let result = verify_inclusion(hash, index, size, &leaf, &proof, &root);
            if index >= size {
                prop_assert_eq!(result, Err(ProofError::IndexOutOfRange { index, size }));
            } else if !(proof.is_empty() && size == 1 && leaf == root) {
                prop_assert!(result.is_err());
            }
        }

        #[test]
        fn inclusion_rejects_arbitrary_input_for_small_sizes(
            size in 1u64..2000,
            index_seed in any::<u64>(),
            leaf in any::<[u8; 32]>(),
            root in any::<[u8; 32]>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..16),
        ) {
            let hash = TreeHash::Rfc6962;
            let index = index_seed % size;
            let result = verify_inclusion(hash, index, size, &leaf, &proof, &root);
            prop_assert!(result.is_err() || (size == 1 && leaf == root));
        }

        #[test]
        fn consistency_rejects_arbitrary_input_without_panicking(
            size1 in any::<u64>(),
            size2 in any::<u64>(),
            root1 in any::<[u8; 32]>(),
            root2 in any::<[u8; 32]>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..130),
        ) {
            let hash = TreeHash::Rfc6962;
            let result = verify_consistency(hash, size1, size2, &root1, &root2, &proof);
            let empty_first = size1 == 0 && root1 == hash.empty_root() && (size2 != 0 || root2 == root1);
            let equal_trees = size1 != 0 && size1 == size2 && root1 == root2;
            let trivially_ok = proof.is_empty() && (empty_first || equal_trees);
            if size1 > size2 {
                prop_assert_eq!(result, Err(ProofError::SizesOutOfOrder { size1, size2 }));
            } else if !trivially_ok {
                prop_assert!(result.is_err());
            }
        }

        #[test]
        fn consistency_rejects_arbitrary_input_for_small_sizes(
            size2 in 1u64..2000,
            size1_seed in any::<u64>(),
            root1 in any::<[u8; 32]>(),
            root2 in any::<[u8; 32]>(),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..24),
        ) {
            let hash = TreeHash::Rfc6962;
            let size1 = size1_seed % (size2 + 1);
            let result = verify_consistency(hash, size1, size2, &root1, &root2, &proof);
            prop_assert!(result.is_err() || (proof.is_empty() && size1 == size2 && root1 == root2));
        }
    }
}
