//! Generation of RFC 9162 inclusion and consistency proofs from stored node hashes.
//!
//! The log stores the hash of every complete, aligned subtree (see [`NodeSource`]), so a
//! proof never rehashes the log: [`inclusion_proof`] and [`consistency_proof`] each read
//! O(log n) stored nodes, and only hash to combine the few that cover an incomplete
//! right edge ([`subtree_root`]). The proofs are exactly RFC 9162's `PATH(m, D[n])`
//! (section 2.1.3.1) and `PROOF(m, D[n])` (section 2.1.4.1), hashed as the source's
//! [`TreeHash`] says (SHA-256 in log format 2) by the one implementation of
//! [`keyledger_verify::merkle`], whose verifiers check them.

use keyledger_verify::merkle::{Hash, TreeHash};

/// A store of the hashes of complete, aligned subtrees of the log's tree.
pub trait NodeSource {
    /// Why a node could not be read.
    type Error;

    /// How the tree's nodes are hashed.
    fn tree_hash(&self) -> TreeHash;

    /// The hash of the perfect subtree covering leaves `[index << level, (index + 1) << level)`:
    /// at level 0 the leaf hashes, at level `l` the node hash of nodes `2 * index` and
    /// `2 * index + 1` of level `l - 1`. Only asked for subtrees whose leaves all exist.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofGenError<E> {
    /// An inclusion proof was asked for a leaf outside the tree.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("cannot prove a tree of size {size1} consistent with a smaller tree of size {size2}")]
    SizesOutOfOrder {
        /// The first (older) tree size.
        size1: u64,
        /// The second (newer) tree size.
        size2: u64,
    },
    /// The node source failed.
    #[error("reading a stored tree node failed")]
    Source(#[source] E),
}

/// The largest power of two strictly smaller than `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash `MTH(D[start:end])` of the leaves `[start, end)`, computed from
/// stored nodes. An empty range (`end <= start`) gives the empty root.
///
/// # Cost and precondition
///
/// Every range the RFC's recursion produces from a tree `[0, n)` — and so every range
/// [`inclusion_proof`] and [`consistency_proof`] ask for — has `start` a multiple of the
/// largest power of two not above `end - start`. Such a range is a run of aligned perfect
/// subtrees, one per set bit of its length, largest first; this reads one stored node per
/// set bit (at most 64) and folds them right to left.
///
/// Other ranges are still hashed correctly (by the recursive definition, descending into
/// any subtree that is not aligned), but may read up to `end - start` nodes.
///
/// # Errors
///
/// Any error of the source.
pub fn subtree_root<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let hash = src.tree_hash();
    if end <= start {
        return Ok(hash.empty_root());
    }
    let len = end - start;
    if len.is_power_of_two() && start.is_multiple_of(len) {
        let level = len.trailing_zeros();
        return src.node(level, start >> level);
    }
    if len.is_power_of_two() {
        // An unaligned perfect range: descend (only outside the documented precondition).
        let half = len / 2;
        let left = subtree_root(src, start, start + half)?;
        let right = subtree_root(src, start + half, end)?;
        return Ok(hash.node(&left, &right));
    }
    // Split off the aligned perfect subtrees, largest first, then fold right to left.
    let mut parts = Vec::with_capacity(len.count_ones() as usize);
    let mut offset = start;
    let mut remaining = len;
    while remaining != 0 {
        let size = 1u64 << (u64::BITS - 1 - remaining.leading_zeros());
        parts.push(subtree_root(src, offset, offset + size)?);
        offset += size;
        remaining -= size;
    }
    let mut parts = parts.into_iter().rev();
    let mut root = parts.next().unwrap_or_else(|| hash.empty_root());
    for left in parts {
        root = hash.node(&left, &root);
    }
    Ok(root)
}

/// The inclusion proof (audit path) `PATH(index, D[size])` of RFC 9162 section 2.1.3.1:
/// the sibling hashes from the leaf up to the root, checked by
/// [`keyledger_verify::merkle::verify_inclusion`]. Reads O(log size) stored nodes.
///
/// The caller must make sure the source holds at least `size` leaves.
///
/// # Errors
///
/// [`ProofGenError::IndexOutOfRange`] if `index >= size`; [`ProofGenError::Source`] if a
/// node cannot be read.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofGenError<S::Error>> {
    if index >= size {
        return Err(ProofGenError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, collecting each sibling; the proof lists them leaf first.
    // At most one sibling is an incomplete right edge; all others are single stored nodes.
    let (mut start, mut end) = (0, size);
    let mut siblings = Vec::new();
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if index < mid {
            siblings.push(subtree_root(src, mid, end).map_err(ProofGenError::Source)?);
            end = mid;
        } else {
            siblings.push(subtree_root(src, start, mid).map_err(ProofGenError::Source)?);
            start = mid;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// The consistency proof `PROOF(size1, D[size2])` of RFC 9162 section 2.1.4.1 (via
/// `SUBPROOF`), checked by [`keyledger_verify::merkle::verify_consistency`]. Reads
/// O(log size2) stored nodes.
///
/// For `size1 == 0` or `size1 == size2` the proof is empty (the RFC leaves these cases
/// undefined; the verifier accepts exactly an empty proof for them).
///
/// The caller must make sure the source holds at least `size2` leaves.
///
/// # Errors
///
/// [`ProofGenError::SizesOutOfOrder`] if `size1 > size2`; [`ProofGenError::Source`] if a
/// node cannot be read.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofGenError<S::Error>> {
    if size1 > size2 {
        return Err(ProofGenError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 || size1 == size2 {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:end], whole) unrolled: walk down collecting siblings until the
    // old tree's boundary `size1` is the end of the current subtree.
    let (mut start, mut end) = (0, size2);
    let mut whole = true; // the RFC's `b`: is the current subtree a whole old tree?
    let mut siblings = Vec::new();
    while size1 < end {
        let mid = start + split_point(end - start);
        if size1 <= mid {
            siblings.push(subtree_root(src, mid, end).map_err(ProofGenError::Source)?);
            end = mid;
        } else {
            siblings.push(subtree_root(src, start, mid).map_err(ProofGenError::Source)?);
            start = mid;
            whole = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    if !whole {
        proof.push(subtree_root(src, start, end).map_err(ProofGenError::Source)?);
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}

/// Every complete node of a tree, level by level, held in memory: `levels[0]` are the
/// leaf hashes and `levels[l][i]` the root of leaves `[i << l, (i + 1) << l)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryNodes {
    hash: TreeHash,
    levels: Vec<Vec<Hash>>,
}

/// A node asked of [`MemoryNodes`] that it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no complete node at level {level}, index {index}")]
pub struct NodeOutOfRange {
    /// The level asked for.
    pub level: u32,
    /// The index asked for.
    pub index: u64,
}

impl MemoryNodes {
    /// Builds every level of complete nodes over `leaves` (about `2 * leaves.len()` hashes),
    /// hashed with `hash`.
    #[must_use]
    pub fn from_leaves(hash: TreeHash, leaves: &[Hash]) -> Self {
        let mut levels = vec![leaves.to_vec()];
        loop {
            let below = &levels[levels.len() - 1];
            if below.len() < 2 {
                break;
            }
            let above = below.chunks_exact(2).map(|pair| hash.node(&pair[0], &pair[1])).collect();
            levels.push(above);
        }
        Self { hash, levels }
    }

    /// The number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The root of the whole tree (the empty root if there are no leaves).
    #[must_use]
    pub fn root(&self) -> Hash {
        match subtree_root(self, 0, self.size()) {
            Ok(root) => root,
            // Unreachable: every aligned node of [0, size) is held.
            Err(_) => self.hash.empty_root(),
        }
    }
}

impl NodeSource for MemoryNodes {
    type Error = NodeOutOfRange;

    fn tree_hash(&self) -> TreeHash {
        self.hash
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, NodeOutOfRange> {
        self.levels
            .get(level as usize)
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(NodeOutOfRange { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_verify::merkle::{Frontier, verify_consistency, verify_inclusion};
    use keyledger_verify::testing as rfc;
    use proptest::prelude::*;
    use std::cell::Cell;

    /// A source that counts its reads, to check the O(log n) bound.
    struct Counting<'a> {
        inner: &'a MemoryNodes,
        reads: Cell<u64>,
    }

    impl NodeSource for Counting<'_> {
        type Error = NodeOutOfRange;
        fn tree_hash(&self) -> TreeHash {
            self.inner.tree_hash()
        }
        fn node(&self, level: u32, index: u64) -> Result<Hash, NodeOutOfRange> {
            self.reads.set(self.reads.get() + 1);
            self.inner.node(level, index)
        }
    }

    /// The tree hash of log format 2, which these tests generate proofs for.
    const H: TreeHash = TreeHash::Rfc6962;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| H.leaf(format!("event {i}").as_bytes())).collect()
    }

    fn flip(mut h: Hash, bit: usize) -> Hash {
        h[(bit / 8) % 32] ^= 1 << (bit % 8);
        h
    }

    /// 0..=3, then every power of two up to 1024 with its neighbours, and 1025.
    fn edge_sizes() -> Vec<usize> {
        let mut sizes = vec![0, 1, 2, 3];
        for shift in 2..=10 {
            let p = 1usize << shift;
            sizes.extend([p - 1, p, p + 1]);
        }
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The most reads a proof may make: about two stored nodes per level.
    fn read_bound(size: usize) -> u64 {
        2 * u64::from(usize::BITS - size.leading_zeros()) + 2
    }

    /// Checks the inclusion proof of `m` in the first `n` leaves against the reference,
    /// the verifier, the read bound, and tampering.
    fn check_inclusion(d: &[Hash], nodes: &MemoryNodes, m: usize, n: usize) {
        let tree = &d[..n];
        let root = H.root_from_leaves(tree);
        let counting = Counting { inner: nodes, reads: Cell::new(0) };
        let proof = inclusion_proof(&counting, m as u64, n as u64).expect("in range");
        assert!(counting.reads.get() <= read_bound(n), "reads for {m} in {n}");
        assert_eq!(proof, rfc::path(H, m, tree), "inclusion {m} in {n}");
        let (idx, size) = (m as u64, n as u64);
        assert_eq!(verify_inclusion(H, idx, size, &d[m], &proof, &root), Ok(()));
        assert!(verify_inclusion(H, idx, size, &flip(d[m], m), &proof, &root).is_err());
        assert!(verify_inclusion(H, idx, size, &d[m], &proof, &flip(root, n)).is_err());
        if n > 1 {
            let other = (m + 1 + m % (n - 1)) % n;
            assert_ne!(other, m);
            assert!(verify_inclusion(H, other as u64, size, &d[m], &proof, &root).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let j = (m * 7) % bad.len();
            bad[j] = flip(bad[j], m + j);
            assert!(verify_inclusion(H, idx, size, &d[m], &bad, &root).is_err());
        }
    }

    /// Checks the consistency proof from `m` to `n` leaves against the reference, the
    /// verifier, the read bound, and tampering.
    fn check_consistency(d: &[Hash], nodes: &MemoryNodes, m: usize, n: usize) {
        let tree = &d[..n];
        let (old_root, root) = (H.root_from_leaves(&d[..m]), H.root_from_leaves(tree));
        let counting = Counting { inner: nodes, reads: Cell::new(0) };
        let proof = consistency_proof(&counting, m as u64, n as u64).expect("ordered");
        assert!(counting.reads.get() <= read_bound(n), "reads for {m} -> {n}");
        assert_eq!(proof, rfc::proof(H, m, tree), "consistency {m} -> {n}");
        let (s1, s2) = (m as u64, n as u64);
        assert_eq!(verify_consistency(H, s1, s2, &old_root, &root, &proof), Ok(()));
        assert!(verify_consistency(H, s1, s2, &flip(old_root, m), &root, &proof).is_err());
        if m != 0 {
            // (The empty tree is a prefix of every tree, whatever its root.)
            assert!(verify_consistency(H, s1, s2, &old_root, &flip(root, n), &proof).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let j = (m + n) % bad.len();
            bad[j] = flip(bad[j], n + j);
            assert!(verify_consistency(H, s1, s2, &old_root, &root, &bad).is_err());
        }
    }

    #[test]
    fn edge_sizes_match_the_rfc_and_verify() {
        let sizes = edge_sizes();
        let d = leaves(*sizes.last().expect("non-empty"));
        let nodes = MemoryNodes::from_leaves(H, &d);
        for &n in &sizes {
            for m in 0..n {
                check_inclusion(&d, &nodes, m, n);
            }
            for &m in sizes.iter().filter(|&&m| m <= n) {
                check_consistency(&d, &nodes, m, n);
            }
        }
    }

    #[test]
    fn small_trees_match_the_rfc_exhaustively() {
        let d = leaves(70);
        let nodes = MemoryNodes::from_leaves(H, &d);
        for n in 0..=d.len() {
            for m in 0..n {
                check_inclusion(&d, &nodes, m, n);
            }
            for m in 0..=n {
                check_consistency(&d, &nodes, m, n);
            }
        }
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let nodes = MemoryNodes::from_leaves(H, &leaves(5));
        assert_eq!(inclusion_proof(&nodes, 5, 5), Err(ProofGenError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(inclusion_proof(&nodes, 0, 0), Err(ProofGenError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(
            consistency_proof(&nodes, 4, 3),
            Err(ProofGenError::SizesOutOfOrder { size1: 4, size2: 3 })
        );
        assert_eq!(consistency_proof(&nodes, 0, 5), Ok(vec![]));
        assert_eq!(consistency_proof(&nodes, 5, 5), Ok(vec![]));
        // A tree larger than the source holds surfaces the source's error.
        assert_eq!(
            inclusion_proof(&nodes, 0, 9),
            Err(ProofGenError::Source(NodeOutOfRange { level: 0, index: 8 }))
        );
        assert!(matches!(consistency_proof(&nodes, 3, 9), Err(ProofGenError::Source(_))));
    }

    #[test]
    fn subtree_root_handles_every_range() {
        let d = leaves(40);
        let nodes = MemoryNodes::from_leaves(H, &d);
        for start in 0..=d.len() {
            for end in start..=d.len() {
                assert_eq!(
                    subtree_root(&nodes, start as u64, end as u64),
                    Ok(H.root_from_leaves(&d[start..end])),
                    "[{start}, {end})"
                );
            }
        }
        assert_eq!(subtree_root(&nodes, 7, 3), Ok(H.empty_root()));
    }

    #[test]
    fn memory_nodes_and_frontier_agree_with_root_from_leaves() {
        let d = leaves(300);
        let mut frontier = Frontier::new(H);
        for n in 0..=d.len() {
            let expected = H.root_from_leaves(&d[..n]);
            assert_eq!(frontier.root(), expected, "frontier {n}");
            let nodes = MemoryNodes::from_leaves(H, &d[..n]);
            assert_eq!(nodes.size(), n as u64);
            assert_eq!(nodes.root(), expected, "memory nodes {n}");
            if let Some(leaf) = d.get(n) {
                frontier.push(*leaf);
            }
        }
    }

    /// The seven-leaf tree of RFC 9162 section 2.1.5, with its nodes named as there.
    #[test]
    fn rfc_9162_seven_leaf_example() {
        let d = leaves(7);
        let [a, b, c, d_, e, f, j] = [d[0], d[1], d[2], d[3], d[4], d[5], d[6]];
        let g = H.node(&a, &b);
        let h = H.node(&c, &d_);
        let i = H.node(&e, &f);
        let k = H.node(&g, &h);
        let l = H.node(&i, &j);
        let root = H.node(&k, &l);
        let nodes = MemoryNodes::from_leaves(H, &d);
        assert_eq!(nodes.root(), root);

        assert_eq!(inclusion_proof(&nodes, 0, 7), Ok(vec![b, h, l]));
        assert_eq!(inclusion_proof(&nodes, 3, 7), Ok(vec![c, g, l]));
        assert_eq!(inclusion_proof(&nodes, 4, 7), Ok(vec![f, j, k]));
        assert_eq!(inclusion_proof(&nodes, 6, 7), Ok(vec![i, k]));

        assert_eq!(consistency_proof(&nodes, 3, 7), Ok(vec![c, d_, g, l]));
        assert_eq!(consistency_proof(&nodes, 4, 7), Ok(vec![l]));
        assert_eq!(consistency_proof(&nodes, 6, 7), Ok(vec![i, j, k]));

        let root3 = H.node(&g, &c);
        let root6 = H.node(&k, &i);
        assert_eq!(verify_consistency(H, 3, 7, &root3, &root, &[c, d_, g, l]), Ok(()));
        assert_eq!(verify_consistency(H, 4, 7, &k, &root, &[l]), Ok(()));
        assert_eq!(verify_consistency(H, 6, 7, &root6, &root, &[i, j, k]), Ok(()));
        assert_eq!(verify_inclusion(H, 0, 7, &a, &[b, h, l], &root), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_proofs_match_the_rfc_and_verify(
            size in 1usize..1100,
            index_seed in any::<usize>(),
            old_seed in any::<usize>(),
        ) {
            let d = leaves(size);
            let nodes = MemoryNodes::from_leaves(H, &d);
            check_inclusion(&d, &nodes, index_seed % size, size);
            check_consistency(&d, &nodes, old_seed % (size + 1), size);
        }

        #[test]
        fn proofs_within_a_larger_store_match_the_rfc(
            stored in 1usize..600,
            size_seed in any::<usize>(),
            index_seed in any::<usize>(),
            old_seed in any::<usize>(),
        ) {
            // The source holds more leaves than the tree the proof is about.
            let d = leaves(stored);
            let nodes = MemoryNodes::from_leaves(H, &d);
            let size = 1 + size_seed % stored;
            check_inclusion(&d, &nodes, index_seed % size, size);
            check_consistency(&d, &nodes, old_seed % (size + 1), size);
        }
    }
}
