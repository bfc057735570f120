//! The file-system seam under the segment log.
//!
//! [`crate::segment`] never touches `std::fs` directly: it goes through the small [`Storage`] and
//! [`StorageFile`] traits below, so that tests (and the crash / disk-full suites built on them)
//! can substitute [`FaultyStorage`], which fails writes, fsyncs or tears a write in half on
//! command, at run time, through a shared [`FaultSwitch`]. [`Fault`] names the faults the
//! fault suites switch on, so that the engine and the server are tested against one list.
//!
//! [`OsStorage`] is the real implementation: plain files, positional reads
//! (`pread`, via [`std::os::unix::fs::FileExt`]) so many reader threads can share one handle,
//! `fdatasync` for data and `fsync` of the directory after creating or removing a file. No
//! memory mapping (the crate forbids `unsafe`), so a truncated or vanished file surfaces as an
//! I/O error instead of a `SIGBUS`.
//!
//! Every method reports a plain [`io::Error`]; the caller adds the path and operation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// An open file, as the segment log needs it.
///
/// Writers go through `&mut self`; positional reads go through `&self` and may run
/// concurrently from several threads.
pub trait StorageFile: Send + Sync {
    /// Appends all of `buf` at the end of the file. On error an unknown prefix of `buf` may
    /// have been written.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes the file's data (and the size needed to read it) durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Fills `buf` from `offset` (a positional read; does not move any cursor). Fails with
    /// [`io::ErrorKind::UnexpectedEof`] if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates (or extends with zeros) the file to `len` bytes. Not synced.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Another handle to the same open file (`dup`), so that its fsync can run on another
    /// thread while this one appends: an fsync through either covers the data written through
    /// both before it began.
    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>>;
}

/// The directory and file operations the segment log uses.
pub trait Storage: Send + Sync + 'static {
    /// `mkdir -p`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the entries of a directory, in no particular order. Names that
    /// are not valid UTF-8 are skipped.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for appending, creating it if missing. The handle can also read.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file read-only.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// The length of a file.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Truncates a file to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// `fsync` of a directory, making created, removed or renamed entries durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file (the caller syncs the directory).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// Real files.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsStorage;

impl OsStorage {
    pub fn new() -> Self {
        Self
    }

    /// `OsStorage` behind the `Arc<dyn Storage>` the log takes.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(Self)
    }
}

/// A [`StorageFile`] over a [`std::fs::File`].
#[derive(Debug)]
pub struct OsFile {
    file: File,
}

impl StorageFile for OsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile { file: self.file.try_clone()? }))
    }
}

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        Ok(Box::new(OsFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile { file: File::open(path)? }))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// The run-time switches of a [`FaultyStorage`], shared with the test that flips them.
///
/// All switches start off. Counters record what the storage was asked to do, so tests can
/// assert e.g. "one `sync()` is one `fdatasync`".
#[derive(Debug)]
pub struct FaultSwitch {
    fail_writes: AtomicBool,
    fail_sync: AtomicBool,
    short_write: AtomicBool,
    /// Bytes that may still be written before writes fail with `ENOSPC`; `u64::MAX` = no limit.
    space_left: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    /// Milliseconds every sync takes before it does anything (a slow disk; not a fault).
    sync_delay_ms: AtomicU64,
}

impl Default for FaultSwitch {
    fn default() -> Self {
        Self {
            fail_writes: AtomicBool::new(false),
            fail_sync: AtomicBool::new(false),
            short_write: AtomicBool::new(false),
            space_left: AtomicU64::new(u64::MAX),
            writes: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_delay_ms: AtomicU64::new(0),
        }
    }
}

/// `ENOSPC`, as the kernel reports a full disk.
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

/// `EIO`, as the kernel reports a failed writeback on fsync.
fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl FaultSwitch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every append fails with `ENOSPC` before writing anything.
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Every `sync_data` / `sync_dir` / `truncate` fails with `EIO`.
    pub fn set_fail_sync(&self, on: bool) {
        self.fail_sync.store(on, Ordering::SeqCst);
    }

    /// Every append writes the first half of its buffer (rounded down), then fails with `EIO`.
    pub fn set_short_write(&self, on: bool) {
        self.short_write.store(on, Ordering::SeqCst);
    }

    /// A disk that fills up: after `bytes` more bytes, an append writes what still fits and
    /// fails with `ENOSPC`. `None` removes the limit.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.space_left.store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Every sync first waits `delay` (a slow disk: durable writes take that long, and
    /// succeed). Not a [`Fault`] and not turned off by [`Self::clear`]: zero turns it off.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.sync_delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Turns every fault off (counters are kept).
    pub fn clear(&self) {
        self.set_fail_writes(false);
        self.set_fail_sync(false);
        self.set_short_write(false);
        self.set_space_left(None);
    }

    /// Appends attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Bytes actually written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::SeqCst)
    }

    /// File and directory syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// How many bytes of a `len`-byte append may be written, and the error after them.
    fn admit(&self, len: usize) -> (usize, Option<io::Error>) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fail_writes.load(Ordering::SeqCst) {
            return (0, Some(enospc()));
        }
        let (mut allowed, mut error) = (len, None);
        if self.short_write.load(Ordering::SeqCst) {
            (allowed, error) = (len / 2, Some(eio()));
        }
        let space = self.space_left.load(Ordering::SeqCst);
        if space != u64::MAX {
            if (allowed as u64) > space {
                (allowed, error) = (space as usize, Some(enospc()));
            }
            self.space_left.store(space - allowed as u64, Ordering::SeqCst);
        }
        (allowed, error)
    }

    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        let delay = self.sync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self.fail_sync.load(Ordering::SeqCst) { Err(eio()) } else { Ok(()) }
    }
}

/// One way a disk fails, as tests switch it on through a [`FaultSwitch`].
///
/// The fault suites of the engine and the HTTP server both run over [`FaultyStorage`] and
/// take their faults from this one list, so they cover the same faults with the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every append fails with `ENOSPC` before writing anything.
    FailWrites,
    /// Every fsync (file or directory) fails with `EIO`.
    FailSync,
    /// Every append writes half its bytes, then fails with `EIO`.
    ShortWrite,
    /// The disk fills up: [`Fault::DISK_FILLS_AFTER`] more bytes fit, then appends fail with
    /// `ENOSPC` (inside the first frame of a batch of records longer than 31 bytes).
    DiskFills,
}

impl Fault {
    /// Every fault, in a fixed order.
    pub const ALL: [Fault; 4] = [Fault::FailWrites, Fault::FailSync, Fault::ShortWrite, Fault::DiskFills];

    /// The bytes that still fit once [`Fault::DiskFills`] is switched on.
    pub const DISK_FILLS_AFTER: u64 = 40;

    /// Switches this fault on in `switch` (and no other; [`FaultSwitch::clear`] turns it off).
    pub fn switch_on(self, switch: &FaultSwitch) {
        match self {
            Fault::FailWrites => switch.set_fail_writes(true),
            Fault::FailSync => switch.set_fail_sync(true),
            Fault::ShortWrite => switch.set_short_write(true),
            Fault::DiskFills => switch.set_space_left(Some(Self::DISK_FILLS_AFTER)),
        }
    }
}

/// [`OsStorage`] with injectable faults, for tests.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: OsStorage,
    switch: Arc<FaultSwitch>,
}

impl Default for FaultyStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultyStorage {
    /// A storage with all faults off; get its switch with [`FaultyStorage::switch`].
    pub fn new() -> Self {
        Self::with_switch(FaultSwitch::new())
    }

    pub fn with_switch(switch: Arc<FaultSwitch>) -> Self {
        Self { inner: OsStorage, switch }
    }

    pub fn switch(&self) -> Arc<FaultSwitch> {
        self.switch.clone()
    }
}

struct FaultyFile {
    inner: Box<dyn StorageFile>,
    switch: Arc<FaultSwitch>,
}

impl StorageFile for FaultyFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let (allowed, error) = self.switch.admit(buf.len());
        if allowed > 0 {
            self.inner.append(&buf[..allowed])?;
            self.switch.bytes_written.fetch_add(allowed as u64, Ordering::SeqCst);
        }
        match error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.switch.sync()?;
        self.inner.sync_data()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile { inner: self.inner.try_clone()?, switch: self.switch.clone() }))
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile { inner: self.inner.open_append(path)?, switch: self.switch.clone() }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile { inner: self.inner.open_read(path)?, switch: self.switch.clone() }))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.switch.sync()?;
        self.inner.truncate(path, len)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.switch.sync()?;
        self.inner.sync_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a switched-on fault does to a 100-byte append and to an fsync: bytes that reached
    /// the file, the append's errno, and the fsync's errno.
    fn effect(fault: Fault) -> (u64, Option<i32>, Option<i32>) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let mut file = storage.open_append(&dir.path().join("f")).unwrap();
        fault.switch_on(&storage.switch());
        let append = file.append(&[7u8; 100]).err().and_then(|e| e.raw_os_error());
        let sync = file.sync_data().err().and_then(|e| e.raw_os_error());
        (file.len().unwrap(), append, sync)
    }

    #[test]
    fn each_fault_fails_the_way_it_is_documented() {
        const EIO: Option<i32> = Some(5);
        const ENOSPC: Option<i32> = Some(28);
        assert_eq!(effect(Fault::FailWrites), (0, ENOSPC, None));
        assert_eq!(effect(Fault::FailSync), (100, None, EIO));
        assert_eq!(effect(Fault::ShortWrite), (50, EIO, None));
        assert_eq!(effect(Fault::DiskFills), (Fault::DISK_FILLS_AFTER, ENOSPC, None));
    }

    #[test]
    fn clear_turns_every_fault_off() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let switch = storage.switch();
        let mut file = storage.open_append(&dir.path().join("f")).unwrap();
        for fault in Fault::ALL {
            fault.switch_on(&switch);
        }
        switch.clear();
        file.append(&[7u8; 100]).unwrap();
        file.sync_data().unwrap();
        assert_eq!(file.len().unwrap(), 100);
    }
}
