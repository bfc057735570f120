//! Stored node hashes of the Merkle tree, so proofs read O(log n) hashes and never rehash
//! the log.
//!
//! Level `l` holds, in `tree/level-LL.hash`, the hash of every *complete* aligned subtree of
//! `2^l` leaves, in order, 32 bytes each: level 0 is the leaf hashes. A tree of `n` leaves
//! therefore has `n >> l` hashes at level `l`, and about `2n` hashes in all.
//!
//! The files are derived data: they are written after each batch (page cache) but only
//! fsynced when the writer records a checkpoint or stops, after which `tree/state` records
//! the size they are known to be complete for. On open, everything past that size is cut
//! and recomputed from the log's own records, so a crash can never leave a node that does
//! not match the events. `log verify` recomputes every stored node and names the first
//! that differs.

use crate::proof::NodeSource;
use keyledger_verify::merkle::{Frontier, Hash, node_hash};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Errors of the node-hash store.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("node ({level}, {index}) is beyond the tree of {size} leaves")]
    OutOfRange { level: u32, index: u64, size: u64 },
    #[error("tree state file {0} is malformed")]
    BadState(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |source| TreeError::Io { op, path: path.to_owned(), source }
}

const HASH_LEN: u64 = 32;
const STATE_FILE: &str = "state";

struct Levels {
    dir: PathBuf,
    files: RwLock<Vec<Arc<File>>>,
}

/// The file holding level `level` of the tree stored in `dir`.
pub fn level_path(dir: &Path, level: usize) -> PathBuf {
    dir.join(format!("level-{level:02}.hash"))
}

impl Levels {
    fn path(&self, level: usize) -> PathBuf {
        level_path(&self.dir, level)
    }

    fn file(&self, level: usize) -> Result<Arc<File>, TreeError> {
        if let Some(file) = self.files.read().unwrap_or_else(|e| e.into_inner()).get(level) {
            return Ok(file.clone());
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        while files.len() <= level {
            let path = self.path(files.len());
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open", &path))?;
            files.push(Arc::new(file));
        }
        Ok(files[level].clone())
    }

    fn read(&self, level: usize, index: u64) -> Result<Hash, TreeError> {
        let file = self.file(level)?;
        let mut hash = [0u8; 32];
        file.read_exact_at(&mut hash, index * HASH_LEN).map_err(io_err("read", &self.path(level)))?;
        Ok(hash)
    }
}

/// Read access to the stored nodes, shareable across threads. Only nodes of the published
/// size are visible.
#[derive(Clone)]
pub struct TreeReader {
    levels: Arc<Levels>,
    size: Arc<AtomicU64>,
}

impl TreeReader {
    /// Leaves in the published tree.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Root of the tree of the first `size` leaves (any size up to the published one).
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        if size > self.size() {
            return Err(TreeError::OutOfRange { level: 0, index: size, size: self.size() });
        }
        crate::proof::subtree_root(self, 0, size)
    }

    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, crate::proof::ProofGenError<TreeError>> {
        if size > self.size() {
            return Err(crate::proof::ProofGenError::Source(TreeError::OutOfRange {
                level: 0,
                index: size,
                size: self.size(),
            }));
        }
        crate::proof::inclusion_proof(self, index, size)
    }

    pub fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<Hash>, crate::proof::ProofGenError<TreeError>> {
        if size2 > self.size() {
            return Err(crate::proof::ProofGenError::Source(TreeError::OutOfRange {
                level: 0,
                index: size2,
                size: self.size(),
            }));
        }
        crate::proof::consistency_proof(self, size1, size2)
    }

    /// A stored node, for `log verify` (which checks every one).
    pub fn stored_node(&self, level: u32, index: u64) -> Result<Hash, TreeError> {
        self.levels.read(level as usize, index)
    }
}

impl NodeSource for TreeReader {
    type Error = TreeError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, TreeError> {
        let size = self.size();
        if level >= 64 || index >= (size >> level) {
            return Err(TreeError::OutOfRange { level, index, size });
        }
        self.levels.read(level as usize, index)
    }
}

/// The writer's side: appends leaves, keeps the frontier (so the root is always at hand),
/// and publishes new sizes to readers.
pub struct TreeWriter {
    levels: Arc<Levels>,
    size: Arc<AtomicU64>,
    frontier: Frontier,
    /// Hashes written so far per level (may run ahead of the published size).
    counts: Vec<u64>,
}

impl TreeWriter {
    /// Opens the store in `dir` for a log of `log_len` records, recomputing whatever the
    /// files do not hold durably from `leaf_of(seq)` (the leaf hash of record `seq`).
    pub fn open(
        dir: &Path,
        log_len: u64,
        mut leaf_of: impl FnMut(u64) -> Result<Hash, TreeError>,
    ) -> Result<Self, TreeError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let levels = Arc::new(Levels { dir: dir.to_owned(), files: RwLock::new(Vec::new()) });
        let trusted = read_state(dir)?.min(log_len);
        // Cut every level to what the trusted size implies; the rest is recomputed below.
        let mut counts = Vec::new();
        for level in 0..64usize {
            let keep = trusted >> level;
            let path = levels.path(level);
            if keep == 0 && !path.exists() {
                break;
            }
            let file = levels.file(level)?;
            let len = file.metadata().map_err(io_err("stat", &path))?.len();
            if len != keep * HASH_LEN {
                if len < keep * HASH_LEN {
                    // The state file promised more than is there: the files are not ours to
                    // trust, so rebuild everything from the log.
                    return Self::rebuild(dir, levels, log_len, leaf_of);
                }
                file.set_len(keep * HASH_LEN).map_err(io_err("truncate", &path))?;
            }
            counts.push(keep);
        }
        let size = Arc::new(AtomicU64::new(trusted));
        let reader = TreeReader { levels: levels.clone(), size: size.clone() };
        let peaks = peaks_of(&reader, trusted)?;
        let frontier =
            Frontier::from_parts(trusted, peaks).map_err(|_| TreeError::BadState(dir.join(STATE_FILE)))?;
        let mut writer = TreeWriter { levels, size, frontier, counts };
        let mut leaves = Vec::with_capacity(4096);
        for seq in trusted..log_len {
            leaves.push(leaf_of(seq)?);
            if leaves.len() == 4096 {
                writer.append_leaves(&leaves)?;
                leaves.clear();
            }
        }
        writer.append_leaves(&leaves)?;
        writer.publish();
        Ok(writer)
    }

    fn rebuild(
        dir: &Path,
        levels: Arc<Levels>,
        log_len: u64,
        leaf_of: impl FnMut(u64) -> Result<Hash, TreeError>,
    ) -> Result<Self, TreeError> {
        for file in levels.files.read().unwrap_or_else(|e| e.into_inner()).iter() {
            file.set_len(0).map_err(io_err("truncate", dir))?;
        }
        write_state(dir, 0)?;
        drop(levels);
        Self::open(dir, log_len, leaf_of)
    }

    pub fn reader(&self) -> TreeReader {
        TreeReader { levels: self.levels.clone(), size: self.size.clone() }
    }

    /// Hides every leaf past `size` from readers (until the next [`Self::publish`]), e.g.
    /// the leaves of records a failed fsync may have lost.
    pub fn hide_after(&self, size: u64) {
        self.size.fetch_min(size, Ordering::AcqRel);
    }

    /// Reopens the store in place for a log of `log_len` records, exactly as
    /// [`TreeWriter::open`] would after a restart (nodes past the fsynced `tree/state` are
    /// cut and recomputed from `leaf_of`), and makes readers see the reopened files. Readers
    /// see at most the smaller of the old size and the trusted size meanwhile; on an error
    /// the writer must not be used again before a successful reopen.
    pub fn reopen(
        &mut self,
        log_len: u64,
        leaf_of: impl FnMut(u64) -> Result<Hash, TreeError>,
    ) -> Result<(), TreeError> {
        self.hide_after(read_state(&self.levels.dir).unwrap_or(0).min(log_len));
        let fresh = Self::open(&self.levels.dir, log_len, leaf_of)?;
        let files = std::mem::take(&mut *fresh.levels.files.write().unwrap_or_else(|e| e.into_inner()));
        *self.levels.files.write().unwrap_or_else(|e| e.into_inner()) = files;
        self.frontier = fresh.frontier;
        self.counts = fresh.counts;
        self.publish();
        Ok(())
    }

    /// Adds leaves (written to the page cache, not yet visible to readers).
    pub fn append_leaves(&mut self, leaves: &[Hash]) -> Result<(), TreeError> {
        if leaves.is_empty() {
            return Ok(());
        }
        // Collect the new complete nodes per level, then write each level once.
        let mut new_nodes: Vec<Vec<u8>> = Vec::new();
        for leaf in leaves {
            let before = self.frontier.size();
            self.frontier.push(*leaf);
            // Leaf `before` completes one node at every level l where bit l..0 of before+1 are 0.
            let mut node = *leaf;
            let mut level = 0usize;
            loop {
                if new_nodes.len() <= level {
                    new_nodes.push(Vec::new());
                }
                new_nodes[level].extend_from_slice(&node);
                let index = (before >> level) as usize;
                if index.is_multiple_of(2) {
                    break;
                }
                // The left sibling is either among this call's new nodes or stored.
                let pending = &new_nodes[level];
                let left = if pending.len() >= 64 {
                    let at = pending.len() - 64;
                    pending[at..at + 32].try_into().unwrap_or([0; 32])
                } else {
                    self.levels.read(level, (before >> level) - 1)?
                };
                node = node_hash(&left, &node);
                level += 1;
            }
        }
        for (level, bytes) in new_nodes.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            while self.counts.len() <= level {
                self.counts.push(0);
            }
            let file = self.levels.file(level)?;
            file.write_all_at(bytes, self.counts[level] * HASH_LEN)
                .map_err(io_err("write", &self.levels.path(level)))?;
            self.counts[level] += bytes.len() as u64 / HASH_LEN;
        }
        Ok(())
    }

    /// Makes every appended leaf visible to readers.
    pub fn publish(&self) {
        self.size.store(self.frontier.size(), Ordering::Release);
    }

    /// Leaves appended (published or not).
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root over every appended leaf, O(log n) from the frontier.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Makes the files durable and records the size they are complete for.
    pub fn sync(&self) -> Result<(), TreeError> {
        for (level, file) in self.levels.files.read().unwrap_or_else(|e| e.into_inner()).iter().enumerate() {
            file.sync_data().map_err(io_err("fsync", &self.levels.path(level)))?;
        }
        write_state(&self.levels.dir, self.frontier.size())
    }
}

/// The roots of the perfect subtrees making up a tree of `size` leaves, left to right.
fn peaks_of(reader: &TreeReader, size: u64) -> Result<Vec<Hash>, TreeError> {
    let mut peaks = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            peaks.push(reader.levels.read(level as usize, start >> level)?);
            start += 1u64 << level;
        }
    }
    Ok(peaks)
}

/// The number of leaves the stored files are known (fsynced) to be complete for.
pub fn read_state(dir: &Path) -> Result<u64, TreeError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let array: [u8; 12] =
                bytes.as_slice().try_into().map_err(|_| TreeError::BadState(path.clone()))?;
            let size = u64::from_le_bytes(array[..8].try_into().unwrap_or_default());
            let check = u32::from_le_bytes(array[8..].try_into().unwrap_or_default());
            if crc32c::crc32c(&array[..8]) != check {
                return Err(TreeError::BadState(path));
            }
            Ok(size)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(TreeError::Io { op: "read", path, source: e }),
    }
}

fn write_state(dir: &Path, size: u64) -> Result<(), TreeError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join("state.tmp");
    let mut bytes = size.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&size.to_le_bytes()).to_le_bytes());
    let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all_at(&bytes, 0).map_err(io_err("write", &tmp))?;
    file.sync_data().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_verify::merkle::{leaf_hash, root_from_leaves, verify_consistency, verify_inclusion};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn stored_nodes_give_roots_and_proofs_for_every_size() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(70);
        let mut writer = TreeWriter::open(dir.path(), 0, |_| unreachable!()).unwrap();
        for chunk in all.chunks(7) {
            writer.append_leaves(chunk).unwrap();
            writer.publish();
        }
        let reader = writer.reader();
        assert_eq!(writer.root(), root_from_leaves(&all));
        for size in 0..=70u64 {
            let root = reader.root_at(size).unwrap();
            assert_eq!(root, root_from_leaves(&all[..size as usize]), "size {size}");
            for index in (0..size).step_by(5) {
                let proof = reader.inclusion_proof(index, size).unwrap();
                verify_inclusion(index, size, &all[index as usize], &proof, &root).unwrap();
            }
            let proof = reader.consistency_proof(size / 2, size).unwrap();
            verify_consistency(size / 2, size, &reader.root_at(size / 2).unwrap(), &root, &proof).unwrap();
        }
    }

    #[test]
    fn reopen_recomputes_what_was_not_synced() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(100);
        {
            let mut writer = TreeWriter::open(dir.path(), 0, |_| unreachable!()).unwrap();
            writer.append_leaves(&all[..40]).unwrap();
            writer.sync().unwrap();
            writer.append_leaves(&all[40..77]).unwrap();
            // no sync: as after a crash, the files may hold anything past 40
            let level0 = dir.path().join("level-00.hash");
            let file = OpenOptions::new().write(true).open(level0).unwrap();
            file.write_all_at(&[0xee; 64], 45 * 32).unwrap();
        }
        let writer = TreeWriter::open(dir.path(), 100, |seq| Ok(all[seq as usize])).unwrap();
        assert_eq!(writer.size(), 100);
        assert_eq!(writer.root(), root_from_leaves(&all));
        assert_eq!(writer.reader().root_at(100).unwrap(), root_from_leaves(&all));
        assert_eq!(writer.reader().root_at(63).unwrap(), root_from_leaves(&all[..63]));
    }

    #[test]
    fn clean_reopen_reads_no_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(33);
        {
            let mut writer = TreeWriter::open(dir.path(), 0, |_| unreachable!()).unwrap();
            writer.append_leaves(&all).unwrap();
            writer.sync().unwrap();
        }
        let writer = TreeWriter::open(dir.path(), 33, |_| panic!("a clean reopen must not rehash")).unwrap();
        assert_eq!(writer.root(), root_from_leaves(&all));
    }
}
