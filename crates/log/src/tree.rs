//! Stored node hashes of the Merkle tree, so proofs read O(log n) hashes and never rehash
//! the log.
//!
//! Level `l` holds, in `tree/level-LL.hash`, the hash of every *complete* aligned subtree of
//! `2^l` leaves, in order, 32 bytes each. A tree of `n` leaves has `n >> l` hashes at level
//! `l`. Only the levels from [`LOWEST_STORED_LEVEL`] up are stored (about `n / 8` hashes in
//! all, 4 bytes per leaf): a node below that level covers at most 8 leaves and is recomputed
//! from the records themselves (a leaf hash is the hash of the stored record bytes) through
//! the [`LeafSource`] when a proof or a root needs it (a root rehashes at most 15 records, a
//! proof at most 30). Files of lower levels left by an older version are deleted on open.
//!
//! The nodes are hashed as the log's format says ([`TreeHash`]: SHA-256 in format 2), and
//! `tree/hash` names that hash (no file: BLAKE3, as format 1 wrote it). Opened with another
//! hash than the files hold, the store forgets them and recomputes every node, so a log
//! upgraded to format 2 (docs/log-format.md, "Upgrading a format-1 log") gets its SHA-256
//! tree on its first open, and a crash in the middle leaves nothing to trust but the events.
//!
//! The files are derived data: they are written after each batch (page cache) but only
//! fsynced when the writer records a checkpoint or stops, after which `tree/state` records
//! the size they are known to be complete for. On open, everything past that size is cut
//! and recomputed from the log's own records, so a crash can never leave a node that does
//! not match the events. `log verify` recomputes every stored node and names the first
//! that differs.

use crate::proof::NodeSource;
use keyledger_verify::merkle::{Frontier, Hash, TreeHash};
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
    #[error("tree hash file {0} names no known hash")]
    BadHash(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |source| TreeError::Io { op, path: path.to_owned(), source }
}

const HASH_LEN: u64 = 32;
const STATE_FILE: &str = "state";
/// Names the hash the level files hold ([`TreeHash::name`]); absent in a format-1 tree.
const HASH_FILE: &str = "hash";

/// The lowest level stored in a file: the nodes of levels `0..LOWEST_STORED_LEVEL` (leaves
/// and subtrees of up to 8 leaves) are recomputed from the records when needed.
pub const LOWEST_STORED_LEVEL: u32 = 4;

/// The leaf hashes of the log's records, for the nodes that are not stored. Only asked for
/// records of the published tree (and, on open, for records the log holds).
pub trait LeafSource: Send + Sync {
    /// Fills `out` with the leaf hashes of records `start .. start + out.len()`.
    fn leaves(&self, start: u64, out: &mut [Hash]) -> Result<(), TreeError>;
}

impl<F: Fn(u64) -> Result<Hash, TreeError> + Send + Sync> LeafSource for F {
    fn leaves(&self, start: u64, out: &mut [Hash]) -> Result<(), TreeError> {
        for (seq, slot) in (start..).zip(out.iter_mut()) {
            *slot = self(seq)?;
        }
        Ok(())
    }
}

struct Levels {
    dir: PathBuf,
    hash: TreeHash,
    /// The open files of levels `LOWEST_STORED_LEVEL..`, lowest first.
    files: RwLock<Vec<Arc<File>>>,
    leaves: Arc<dyn LeafSource>,
}

/// The file holding level `level` of the tree stored in `dir`.
pub fn level_path(dir: &Path, level: usize) -> PathBuf {
    dir.join(format!("level-{level:02}.hash"))
}

/// `level - LOWEST_STORED_LEVEL`, the position of a stored level among the files.
fn slot(level: usize) -> usize {
    level - LOWEST_STORED_LEVEL as usize
}

impl Levels {
    fn path(&self, level: usize) -> PathBuf {
        level_path(&self.dir, level)
    }

    /// The file of a stored level (`level >= LOWEST_STORED_LEVEL`).
    fn file(&self, level: usize) -> Result<Arc<File>, TreeError> {
        if let Some(file) = self.files.read().unwrap_or_else(|e| e.into_inner()).get(slot(level)) {
            return Ok(file.clone());
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        while files.len() <= slot(level) {
            let path = self.path(files.len() + LOWEST_STORED_LEVEL as usize);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open", &path))?;
            files.push(Arc::new(file));
        }
        Ok(files[slot(level)].clone())
    }

    /// Node `(level, index)`: read from its file, or, below [`LOWEST_STORED_LEVEL`], hashed
    /// from the leaves it covers.
    fn read(&self, level: usize, index: u64) -> Result<Hash, TreeError> {
        if level < LOWEST_STORED_LEVEL as usize {
            let mut nodes = [[0u8; 32]; 1 << (LOWEST_STORED_LEVEL - 1)];
            let mut width = 1usize << level;
            self.leaves.leaves(index << level, &mut nodes[..width])?;
            while width > 1 {
                width /= 2;
                for i in 0..width {
                    nodes[i] = self.hash.node(&nodes[2 * i], &nodes[2 * i + 1]);
                }
            }
            return Ok(nodes[0]);
        }
        let file = self.file(level)?;
        let mut hash = [0u8; 32];
        file.read_exact_at(&mut hash, index * HASH_LEN).map_err(io_err("read", &self.path(level)))?;
        Ok(hash)
    }

    /// Nodes `(level, start ..)` into `out`: one positional read of a stored level, or,
    /// below [`LOWEST_STORED_LEVEL`], the leaves they cover read in one run and hashed up.
    fn read_run(&self, level: usize, start: u64, out: &mut [Hash]) -> Result<(), TreeError> {
        if out.is_empty() {
            return Ok(());
        }
        if level < LOWEST_STORED_LEVEL as usize {
            let mut leaves = vec![[0u8; 32]; out.len() << level];
            self.leaves.leaves(start << level, &mut leaves)?;
            let mut width = leaves.len();
            while width > out.len() {
                width /= 2;
                for i in 0..width {
                    leaves[i] = self.hash.node(&leaves[2 * i], &leaves[2 * i + 1]);
                }
            }
            out.copy_from_slice(&leaves[..out.len()]);
            return Ok(());
        }
        let file = self.file(level)?;
        let mut bytes = vec![0u8; out.len() * HASH_LEN as usize];
        file.read_exact_at(&mut bytes, start * HASH_LEN).map_err(io_err("read", &self.path(level)))?;
        for (slot, hash) in out.iter_mut().zip(bytes.chunks_exact(HASH_LEN as usize)) {
            slot.copy_from_slice(hash);
        }
        Ok(())
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
    /// How the nodes are hashed.
    pub fn tree_hash(&self) -> TreeHash {
        self.levels.hash
    }

    /// Leaves in the published tree.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The peaks of the tree of the first `size` leaves (any size up to the published one):
    /// the roots of its perfect subtrees, left to right, one per set bit of `size`, largest
    /// first. For bit `level`, from the highest, it is the node `(level, start >> level)`,
    /// where `start` is the sum of the higher set bits.
    pub fn peaks(&self, size: u64) -> Result<Vec<Hash>, TreeError> {
        if size > self.size() {
            return Err(TreeError::OutOfRange { level: 0, index: size, size: self.size() });
        }
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                peaks.push(self.levels.read(level as usize, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(peaks)
    }

    /// The run of nodes `(level, start)`, `(level, start + 1)`, … `(level, start + out.len() - 1)`
    /// of the published tree, into `out`: the hashes of consecutive complete subtrees of
    /// `2^level` leaves, as a tlog tile serves them. A stored level is one read; below
    /// [`LOWEST_STORED_LEVEL`] the covered leaves are read in one run and hashed up (at most
    /// `out.len() * 8` records). Every node must be complete in the published tree.
    pub fn nodes(&self, level: u32, start: u64, out: &mut [Hash]) -> Result<(), TreeError> {
        let size = self.size();
        let end = start.checked_add(out.len() as u64);
        match end {
            Some(end) if level < 64 && end <= size >> level => {
                self.levels.read_run(level as usize, start, out)
            }
            _ => Err(TreeError::OutOfRange { level, index: end.unwrap_or(u64::MAX).saturating_sub(1), size }),
        }
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
}

impl NodeSource for TreeReader {
    type Error = TreeError;
    fn tree_hash(&self) -> TreeHash {
        self.levels.hash
    }
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
    /// Hashes written so far per stored level, lowest first (may run ahead of the published
    /// size).
    counts: Vec<u64>,
}

impl TreeWriter {
    /// Opens the store in `dir`, hashed with `hash`, for a log of `log_len` records,
    /// recomputing whatever the files do not hold durably from `leaves` (the leaf hashes of
    /// the records, which must be hashed with `hash` too), which readers also use for the
    /// levels that are not stored. Files holding another hash are recomputed entirely.
    pub fn open(
        dir: &Path,
        hash: TreeHash,
        log_len: u64,
        leaves: Arc<dyn LeafSource>,
    ) -> Result<Self, TreeError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        if read_hash(dir)? != hash {
            // Untrust every stored node first (durably), then name the new hash: a crash
            // in between leaves the old name and nothing trusted, so this runs again.
            write_state(dir, 0)?;
            write_hash(dir, hash)?;
        }
        // Levels below the lowest stored one were stored by older versions: derived data
        // nothing reads any more.
        for level in 0..LOWEST_STORED_LEVEL as usize {
            let path = level_path(dir, level);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(TreeError::Io { op: "remove", path, source: e }),
            }
        }
        let levels = Arc::new(Levels { dir: dir.to_owned(), hash, files: RwLock::new(Vec::new()), leaves });
        let trusted = read_state(dir)?.min(log_len);
        // Cut every level to what the trusted size implies; the rest is recomputed below.
        let mut counts = Vec::new();
        for level in LOWEST_STORED_LEVEL as usize..64 {
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
                    return Self::rebuild(dir, levels, log_len);
                }
                file.set_len(keep * HASH_LEN).map_err(io_err("truncate", &path))?;
            }
            counts.push(keep);
        }
        let size = Arc::new(AtomicU64::new(trusted));
        let reader = TreeReader { levels: levels.clone(), size: size.clone() };
        let peaks = reader.peaks(trusted)?;
        let frontier = Frontier::from_parts(hash, trusted, peaks)
            .map_err(|_| TreeError::BadState(dir.join(STATE_FILE)))?;
        let mut writer = TreeWriter { levels, size, frontier, counts };
        let mut leaves = vec![[0u8; 32]; 4096];
        let mut seq = trusted;
        while seq < log_len {
            let n = (log_len - seq).min(leaves.len() as u64) as usize;
            writer.levels.leaves.leaves(seq, &mut leaves[..n])?;
            writer.append_leaves(&leaves[..n])?;
            seq += n as u64;
        }
        writer.publish();
        Ok(writer)
    }

    fn rebuild(dir: &Path, levels: Arc<Levels>, log_len: u64) -> Result<Self, TreeError> {
        for file in levels.files.read().unwrap_or_else(|e| e.into_inner()).iter() {
            file.set_len(0).map_err(io_err("truncate", dir))?;
        }
        write_state(dir, 0)?;
        let (hash, leaves) = (levels.hash, levels.leaves.clone());
        drop(levels);
        Self::open(dir, hash, log_len, leaves)
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
    /// cut and recomputed from the leaf source), and makes readers see the reopened files.
    /// Readers see at most the smaller of the old size and the trusted size meanwhile; on an
    /// error the writer must not be used again before a successful reopen.
    pub fn reopen(&mut self, log_len: u64) -> Result<(), TreeError> {
        self.hide_after(read_state(&self.levels.dir).unwrap_or(0).min(log_len));
        let fresh = Self::open(&self.levels.dir, self.levels.hash, log_len, self.levels.leaves.clone())?;
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
        // Collect the new complete nodes per stored level, then write each level once.
        let mut new_nodes: Vec<Vec<u8>> = Vec::new();
        for leaf in leaves {
            let before = self.frontier.size();
            // Leaf `before` completes one node at every level l where bits l..0 of before+1
            // are 0; the left sibling of each is a peak of the frontier before the push (the
            // peak of bit l is preceded by one peak per lower set bit, and those are all set).
            let peaks = self.frontier.peaks();
            let mut node = *leaf;
            let mut level = 0usize;
            loop {
                if level >= LOWEST_STORED_LEVEL as usize {
                    if new_nodes.len() <= slot(level) {
                        new_nodes.resize_with(slot(level) + 1, Vec::new);
                    }
                    new_nodes[slot(level)].extend_from_slice(&node);
                }
                if (before >> level) & 1 == 0 {
                    break;
                }
                node = self.levels.hash.node(&peaks[peaks.len() - 1 - level], &node);
                level += 1;
            }
            self.frontier.push(*leaf);
        }
        for (at, bytes) in new_nodes.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let level = at + LOWEST_STORED_LEVEL as usize;
            while self.counts.len() <= at {
                self.counts.push(0);
            }
            let file = self.levels.file(level)?;
            file.write_all_at(bytes, self.counts[at] * HASH_LEN)
                .map_err(io_err("write", &self.levels.path(level)))?;
            self.counts[at] += bytes.len() as u64 / HASH_LEN;
        }
        Ok(())
    }

    /// Makes every appended leaf visible to readers.
    pub fn publish(&self) {
        self.size.store(self.frontier.size(), Ordering::Release);
    }

    /// How the nodes are hashed.
    pub fn tree_hash(&self) -> TreeHash {
        self.levels.hash
    }

    /// Leaves appended (published or not).
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The compact range of every appended leaf (what a shared store keeps as its head).
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The root over every appended leaf, O(log n) from the frontier.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Makes the files durable and records the size they are complete for.
    pub fn sync(&self) -> Result<(), TreeError> {
        for (at, file) in self.levels.files.read().unwrap_or_else(|e| e.into_inner()).iter().enumerate() {
            let level = at + LOWEST_STORED_LEVEL as usize;
            file.sync_data().map_err(io_err("fsync", &self.levels.path(level)))?;
        }
        write_state(&self.levels.dir, self.frontier.size())
    }
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

/// The hash the level files in `dir` hold: named in `tree/hash`, BLAKE3 without it (a
/// format-1 tree, written before the file existed).
pub fn read_hash(dir: &Path) -> Result<TreeHash, TreeError> {
    let path = dir.join(HASH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.strip_suffix('\n').and_then(TreeHash::from_name).ok_or(TreeError::BadHash(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TreeHash::Blake3),
        Err(e) => Err(TreeError::Io { op: "read", path, source: e }),
    }
}

fn write_hash(dir: &Path, hash: TreeHash) -> Result<(), TreeError> {
    let path = dir.join(HASH_FILE);
    let tmp = dir.join("hash.tmp");
    let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all_at(format!("{}\n", hash.name()).as_bytes(), 0).map_err(io_err("write", &tmp))?;
    file.sync_data().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
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
    use crate::proof::MemoryNodes;
    use keyledger_verify::merkle::{verify_consistency, verify_inclusion};
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;

    /// The tree hash of log format 2.
    const H: TreeHash = TreeHash::Rfc6962;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| H.leaf(&i.to_le_bytes())).collect()
    }

    /// A leaf source over `all` that counts the leaves it hands out.
    fn source(all: &[Hash], reads: Arc<AtomicUsize>) -> Arc<dyn LeafSource> {
        let all = all.to_vec();
        Arc::new(move |seq: u64| {
            reads.fetch_add(1, Ordering::Relaxed);
            all.get(seq as usize).copied().ok_or(TreeError::OutOfRange { level: 0, index: seq, size: 0 })
        })
    }

    fn no_leaves() -> Arc<dyn LeafSource> {
        Arc::new(|_: u64| -> Result<Hash, TreeError> { unreachable!("no leaf may be read") })
    }

    /// A store over `all`, appended in chunks of `chunk` leaves.
    fn store(dir: &Path, all: &[Hash], chunk: usize) -> TreeWriter {
        let mut writer = TreeWriter::open(dir, H, 0, source(all, Arc::default())).unwrap();
        for part in all.chunks(chunk.max(1)) {
            writer.append_leaves(part).unwrap();
            writer.publish();
        }
        writer
    }

    #[test]
    fn files_of_another_hash_are_recomputed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..100u64).map(|i| i.to_le_bytes().to_vec()).collect();
        let hashed = |hash: TreeHash| data.iter().map(|d| hash.leaf(d)).collect::<Vec<_>>();
        let (old, new) = (hashed(TreeHash::Blake3), hashed(H));
        let writer =
            TreeWriter::open(dir.path(), TreeHash::Blake3, 100, source(&old, Arc::default())).unwrap();
        writer.sync().unwrap();
        drop(writer);
        // No hash file: a format-1 tree, as versions before it wrote it.
        assert!(!dir.path().join(HASH_FILE).exists());
        assert_eq!(read_hash(dir.path()).unwrap(), TreeHash::Blake3);
        assert_eq!(read_state(dir.path()).unwrap(), 100);
        let reads = Arc::new(AtomicUsize::new(0));
        let writer = TreeWriter::open(dir.path(), H, 100, source(&new, reads.clone())).unwrap();
        assert_eq!(reads.load(Ordering::Relaxed), 100, "every leaf is rehashed");
        assert_eq!(writer.root(), H.root_from_leaves(&new));
        assert_eq!(writer.reader().root_at(100).unwrap(), H.root_from_leaves(&new));
        assert_eq!(writer.reader().root_at(37).unwrap(), H.root_from_leaves(&new[..37]));
        assert_eq!(read_hash(dir.path()).unwrap(), H);
        writer.sync().unwrap();
        drop(writer);
        // Reopened with the same hash, the synced files are trusted as they are.
        let reads = Arc::new(AtomicUsize::new(0));
        let writer = TreeWriter::open(dir.path(), H, 100, source(&new, reads.clone())).unwrap();
        assert!(reads.load(Ordering::Relaxed) <= 4, "only the peak below the stored levels");
        assert_eq!(writer.reader().root_at(64).unwrap(), H.root_from_leaves(&new[..64]));
        std::fs::write(dir.path().join(HASH_FILE), "md5\n").unwrap();
        assert!(matches!(read_hash(dir.path()), Err(TreeError::BadHash(_))));
    }

    fn level_files(dir: &Path) -> Vec<usize> {
        (0..64).filter(|level| level_path(dir, *level).exists()).collect()
    }

    #[test]
    fn proofs_are_those_of_a_full_store_at_every_size_around_the_unstored_levels() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(70);
        let writer = store(dir.path(), &all, 7);
        let reader = writer.reader();
        assert_eq!(writer.root(), H.root_from_leaves(&all));
        // Levels 4 (4 nodes of 16 leaves), 5 and 6 are stored; nothing below.
        assert_eq!(level_files(dir.path()), vec![4, 5, 6]);
        for size in 0..=70u64 {
            let full = MemoryNodes::from_leaves(H, &all[..size as usize]);
            let root = reader.root_at(size).unwrap();
            assert_eq!(root, H.root_from_leaves(&all[..size as usize]), "size {size}");
            for index in 0..size {
                let proof = reader.inclusion_proof(index, size).unwrap();
                assert_eq!(
                    proof,
                    crate::proof::inclusion_proof(&full, index, size).unwrap(),
                    "{index} {size}"
                );
                verify_inclusion(H, index, size, &all[index as usize], &proof, &root).unwrap();
            }
            for size1 in 0..=size {
                let proof = reader.consistency_proof(size1, size).unwrap();
                assert_eq!(
                    proof,
                    crate::proof::consistency_proof(&full, size1, size).unwrap(),
                    "{size1} {size}"
                );
                verify_consistency(H, size1, size, &reader.root_at(size1).unwrap(), &root, &proof).unwrap();
            }
        }
        // Every node, stored or recomputed, is the full store's.
        let full = MemoryNodes::from_leaves(H, &all);
        for level in 0..7u32 {
            for index in 0..(70u64 >> level) {
                assert_eq!(
                    reader.node(level, index).unwrap(),
                    full.node(level, index).unwrap(),
                    "({level}, {index})"
                );
            }
        }
        assert!(reader.node(0, 70).is_err() && reader.node(4, 4).is_err());
    }

    #[test]
    fn runs_of_nodes_are_the_nodes_one_by_one_at_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(600);
        let writer = store(dir.path(), &all, 50);
        let reader = writer.reader();
        let full = MemoryNodes::from_leaves(H, &all);
        for level in 0..10u32 {
            let count = 600u64 >> level;
            for (start, len) in [(0, count), (1, count.saturating_sub(1)), (count / 3, count / 2), (count, 0)]
            {
                let mut run = vec![[0u8; 32]; len as usize];
                reader.nodes(level, start, &mut run).unwrap();
                for (i, hash) in run.iter().enumerate() {
                    assert_eq!(
                        *hash,
                        full.node(level, start + i as u64).unwrap(),
                        "({level}, {start} + {i})"
                    );
                }
            }
            // One node past the complete ones, or a run that overflows, is out of range.
            let mut one = [[0u8; 32]; 1];
            assert!(matches!(reader.nodes(level, count, &mut one), Err(TreeError::OutOfRange { .. })));
            assert!(matches!(reader.nodes(level, u64::MAX, &mut one), Err(TreeError::OutOfRange { .. })));
        }
        let mut one = [[0u8; 32]; 1];
        assert!(matches!(reader.nodes(64, 0, &mut one), Err(TreeError::OutOfRange { .. })));
        // Leaves past the published size are not visible.
        writer.hide_after(300);
        let mut run = vec![[0u8; 32]; 2];
        assert!(reader.nodes(8, 0, &mut run).is_err());
        reader.nodes(8, 0, &mut run[..1]).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_proofs_are_those_of_a_full_store(
            size in 1u64..3000,
            chunk in 1usize..600,
            picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let all = leaves(size);
            let writer = store(dir.path(), &all, chunk);
            let reader = writer.reader();
            let full = MemoryNodes::from_leaves(H, &all);
            prop_assert_eq!(writer.root(), full.root());
            for (a, b) in picks {
                let n = 1 + b % size;
                let m = a % (n + 1);
                let index = a % n;
                prop_assert_eq!(reader.root_at(n).unwrap(), crate::proof::subtree_root(&full, 0, n).unwrap());
                prop_assert_eq!(
                    reader.inclusion_proof(index, n).unwrap(),
                    crate::proof::inclusion_proof(&full, index, n).unwrap()
                );
                prop_assert_eq!(
                    reader.consistency_proof(m, n).unwrap(),
                    crate::proof::consistency_proof(&full, m, n).unwrap()
                );
            }
        }
    }

    #[test]
    fn reopen_recomputes_what_was_not_synced() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(100);
        {
            let mut writer = TreeWriter::open(dir.path(), H, 0, source(&all, Arc::default())).unwrap();
            writer.append_leaves(&all[..40]).unwrap();
            writer.sync().unwrap();
            writer.append_leaves(&all[40..77]).unwrap();
            // no sync: as after a crash, the files may hold anything past 40 (level 4: past
            // its second node)
            let level4 = dir.path().join("level-04.hash");
            let file = OpenOptions::new().write(true).open(level4).unwrap();
            file.write_all_at(&[0xee; 64], 2 * 32).unwrap();
        }
        let writer = TreeWriter::open(dir.path(), H, 100, source(&all, Arc::default())).unwrap();
        assert_eq!(writer.size(), 100);
        assert_eq!(writer.root(), H.root_from_leaves(&all));
        assert_eq!(writer.reader().root_at(100).unwrap(), H.root_from_leaves(&all));
        assert_eq!(writer.reader().root_at(63).unwrap(), H.root_from_leaves(&all[..63]));
        assert_eq!(writer.reader().root_at(48).unwrap(), H.root_from_leaves(&all[..48]));
    }

    #[test]
    fn a_level_file_shorter_than_the_state_rebuilds_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(100);
        store(dir.path(), &all, 100).sync().unwrap();
        std::fs::write(dir.path().join("level-05.hash"), [0u8; 32]).unwrap();
        let writer = TreeWriter::open(dir.path(), H, 100, source(&all, Arc::default())).unwrap();
        assert_eq!(writer.reader().root_at(100).unwrap(), H.root_from_leaves(&all));
        assert_eq!(std::fs::metadata(dir.path().join("level-05.hash")).unwrap().len(), 3 * 32);
    }

    #[test]
    fn clean_reopen_rehashes_only_the_peaks_below_the_stored_levels() {
        let dir = tempfile::tempdir().unwrap();
        // 47 = 32 + 8 + 4 + 2 + 1: peaks at levels 5 (stored) and 3, 2, 1, 0 (15 leaves).
        let all = leaves(47);
        store(dir.path(), &all, 10).sync().unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let writer = TreeWriter::open(dir.path(), H, 47, source(&all, reads.clone())).unwrap();
        assert_eq!(writer.root(), H.root_from_leaves(&all));
        assert_eq!(reads.load(Ordering::Relaxed), 15);
        // A size that is a multiple of 16 has no peak below level 4.
        let all = leaves(48);
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &all, 10).sync().unwrap();
        let writer = TreeWriter::open(dir.path(), H, 48, no_leaves()).unwrap();
        assert_eq!(writer.root(), H.root_from_leaves(&all));
    }

    #[test]
    fn level_files_of_an_older_version_below_the_stored_levels_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let all = leaves(64);
        store(dir.path(), &all, 64).sync().unwrap();
        // What an older version stored: every level from 0, all consistent.
        let full = MemoryNodes::from_leaves(H, &all);
        for level in 0..LOWEST_STORED_LEVEL {
            let bytes: Vec<u8> =
                (0..(64u64 >> level)).flat_map(|index| full.node(level, index).unwrap()).collect();
            std::fs::write(level_path(dir.path(), level as usize), bytes).unwrap();
        }
        assert_eq!(level_files(dir.path()), vec![0, 1, 2, 3, 4, 5, 6]);
        let mut writer = TreeWriter::open(dir.path(), H, 64, no_leaves()).unwrap();
        assert_eq!(level_files(dir.path()), vec![4, 5, 6]);
        assert_eq!(writer.root(), H.root_from_leaves(&all));
        let more = leaves(80);
        writer.append_leaves(&more[64..]).unwrap();
        writer.publish();
        assert_eq!(writer.root(), H.root_from_leaves(&more));
    }
}
