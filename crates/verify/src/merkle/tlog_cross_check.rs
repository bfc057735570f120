//! The SHA-256 tree (log format 2) checked against an RFC 6962 implementation we did not
//! write: `tlog_tiles`, Cloudflare's port of Go's `golang.org/x/mod/sumdb/tlog`. Leaf and
//! node hashes, roots, inclusion proofs and consistency proofs must agree both ways: our
//! verifiers accept its proofs, its checkers accept ours (from the naive RFC reference that
//! `keyledger-log`'s proof generator is tested against), for every index and older size of
//! trees of arbitrary sizes.

use super::{Frontier, Hash, TreeHash, verify_consistency, verify_inclusion};
use crate::testing as rfc;
use proptest::prelude::*;
use tlog_tiles::tlog;

const SHA256: TreeHash = TreeHash::Rfc6962;

/// A tlog hash store: every stored hash of the records appended so far, in tlog's order.
struct Stored(Vec<tlog::Hash>);

impl tlog::HashReader for Stored {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| self.0.get(i as usize).copied().ok_or(tlog::Error::IndexesNotInTree))
            .collect()
    }
}

/// The records of a tree of `n` leaves, seeded so that different cases hash differently.
fn records(seed: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("event {seed}/{i}").into_bytes()).collect()
}

/// tlog's store of the tree of `records`, and our leaf hashes of them.
fn build(records: &[Vec<u8>]) -> (Stored, Vec<Hash>) {
    let mut stored = Stored(Vec::new());
    for (n, record) in records.iter().enumerate() {
        let new = tlog::stored_hashes(n as u64, record, &stored).expect("tlog appends");
        stored.0.extend(new);
    }
    (stored, records.iter().map(|r| SHA256.leaf(r)).collect())
}

fn ours(proof: &[tlog::Hash]) -> Vec<Hash> {
    proof.iter().map(|h| h.0).collect()
}

fn theirs(proof: &[Hash]) -> Vec<tlog::Hash> {
    proof.iter().map(|h| tlog::Hash(*h)).collect()
}

/// Every hash, root and proof of the tree of `records` agrees with tlog's, for the given
/// leaf `index` and older tree size `old`.
fn agrees(records: &[Vec<u8>], index: usize, old: usize) -> Result<(), TestCaseError> {
    let n = records.len();
    let (stored, leaves) = build(records);
    let size = n as u64;
    // Leaf hashes and node hashes.
    prop_assert_eq!(SHA256.leaf(&records[index]), tlog::record_hash(&records[index]).0);
    if n >= 2 {
        let (a, b) = (tlog::Hash(leaves[0]), tlog::Hash(leaves[1]));
        prop_assert_eq!(SHA256.node(&leaves[0], &leaves[1]), tlog::node_hash(a, b).0);
    }
    // Roots, by the recursive definition and incrementally.
    let root = tlog::tree_hash(size, &stored).expect("tlog root").0;
    prop_assert_eq!(SHA256.root_from_leaves(&leaves), root);
    let mut frontier = Frontier::new(SHA256);
    leaves.iter().for_each(|leaf| frontier.push(*leaf));
    prop_assert_eq!(frontier.root(), root);
    let old_root = tlog::tree_hash(old as u64, &stored).expect("tlog old root").0;
    prop_assert_eq!(SHA256.root_from_leaves(&leaves[..old]), old_root);
    // Inclusion: the same audit path, accepted by both checkers.
    let their_path = tlog::prove_record(size, index as u64, &stored).expect("tlog proves a record");
    let our_path = rfc::path(SHA256, index, &leaves);
    prop_assert_eq!(&ours(&their_path), &our_path);
    prop_assert_eq!(verify_inclusion(SHA256, index as u64, size, &leaves[index], &our_path, &root), Ok(()));
    let checked = tlog::check_record(
        &theirs(&our_path),
        size,
        tlog::Hash(root),
        index as u64,
        tlog::Hash(leaves[index]),
    );
    prop_assert!(checked.is_ok(), "tlog rejects our inclusion proof: {checked:?}");
    // Consistency from the older tree (tlog proves only 0 < old <= size).
    if old > 0 {
        let their_proof = tlog::prove_tree(size, old as u64, &stored).expect("tlog proves a tree");
        let our_proof = rfc::proof(SHA256, old, &leaves);
        prop_assert_eq!(&ours(&their_proof), &our_proof);
        prop_assert_eq!(verify_consistency(SHA256, old as u64, size, &old_root, &root, &our_proof), Ok(()));
        let checked =
            tlog::check_tree(&theirs(&our_proof), size, tlog::Hash(root), old as u64, tlog::Hash(old_root));
        prop_assert!(checked.is_ok(), "tlog rejects our consistency proof: {checked:?}");
    }
    Ok(())
}

#[test]
fn the_empty_tree_has_tlogs_empty_root() {
    let stored = Stored(Vec::new());
    let root = tlog::tree_hash(0, &stored).unwrap().0;
    assert_eq!(SHA256.empty_root(), root);
    assert_eq!(SHA256.empty_root(), tlog::EMPTY_HASH.0);
    assert_eq!(Frontier::new(SHA256).root(), root);
}

#[test]
fn every_index_and_older_size_agrees_for_small_trees() {
    for n in 1..=33 {
        let records = records(0, n);
        for index in 0..n {
            for old in 0..=n {
                agrees(&records, index, old)
                    .unwrap_or_else(|e| panic!("n {n}, index {index}, old {old}: {e}"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_trees_agree_with_tlog(
        seed in any::<u64>(),
        n in 1usize..1100,
        index_seed in any::<usize>(),
        old_seed in any::<usize>(),
    ) {
        agrees(&records(seed, n), index_seed % n, old_seed % (n + 1))?;
    }

    #[test]
    fn tampered_proofs_are_rejected_by_both(
        n in 2usize..300,
        index_seed in any::<usize>(),
        which in any::<usize>(),
        bit in 0usize..256,
    ) {
        let records = records(7, n);
        let (stored, leaves) = build(&records);
        let size = n as u64;
        let index = index_seed % n;
        let root = SHA256.root_from_leaves(&leaves);
        let mut path = rfc::path(SHA256, index, &leaves);
        prop_assume!(!path.is_empty());
        let at = which % path.len();
        path[at][bit / 8] ^= 1 << (bit % 8);
        prop_assert!(verify_inclusion(SHA256, index as u64, size, &leaves[index], &path, &root).is_err());
        let theirs_checked =
            tlog::check_record(&theirs(&path), size, tlog::Hash(root), index as u64, tlog::Hash(leaves[index]));
        prop_assert!(theirs_checked.is_err());
        prop_assert_eq!(tlog::tree_hash(size, &stored).unwrap().0, root);
    }
}
