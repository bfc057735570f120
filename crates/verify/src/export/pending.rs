//! The inclusion proofs of a filtered export's lines, kept from the line that carries each
//! until the manifest, the export's last line, names the checkpoint they prove into
//! (docs/export-format.md, section 6).
//!
//! Exists so that verifying a filtered export takes memory that does not grow with the
//! export: the first [`MEMORY_BYTES`] of proofs are kept in memory, the rest are appended
//! to a temporary file (created only then, in the system's temp dir, readable by its owner
//! only, and unlinked at once where the system allows, otherwise when this is dropped) and
//! read back in order, once. A failure to write or read that file is an input error naming
//! it; nothing is ever skipped.

use super::ExportError;
use crate::merkle::Hash;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// How many bytes of proofs are kept in memory before they go to the temporary file. Tests
/// (this crate's, and with the `testing` feature other crates') use a bound of a few
/// proofs, so that every filtered export they verify takes the file's path too.
const MEMORY_BYTES: usize = if cfg!(any(test, feature = "testing")) { 512 } else { 32 << 20 };

/// One line's inclusion proof, as the line stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The line's number in the export (1-based).
    pub number: u64,
    pub seq: u64,
    pub leaf: Hash,
    pub proof: Vec<Hash>,
}

impl Pending {
    /// What it takes in memory, roughly, or in the file.
    fn size(&self) -> usize {
        8 + 8 + 32 + 4 + 32 * self.proof.len()
    }
}

/// The proofs, in line order.
#[derive(Default)]
pub(crate) struct PendingProofs {
    memory: Vec<Pending>,
    memory_bytes: usize,
    spill: Option<Spill>,
}

/// The temporary file the proofs beyond the memory bound go to.
struct Spill {
    writer: BufWriter<File>,
    /// Still to be removed when dropped (where it could not be unlinked at once).
    path: Option<PathBuf>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn spill_error(what: &str, error: &std::io::Error) -> ExportError {
    ExportError::Input(format!(
        "cannot {what} the temporary file that holds the export's inclusion proofs (in {}): {error}",
        std::env::temp_dir().display()
    ))
}

impl PendingProofs {
    /// Keeps `pending`, after every proof kept before it.
    pub(crate) fn push(&mut self, pending: Pending) -> Result<(), ExportError> {
        if self.spill.is_none() && self.memory_bytes + pending.size() <= MEMORY_BYTES {
            self.memory_bytes += pending.size();
            self.memory.push(pending);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(Spill::create()?),
        };
        let count = u32::try_from(pending.proof.len()).map_err(|_| spill_error("write", &too_long()))?;
        let mut record = Vec::with_capacity(pending.size());
        record.extend_from_slice(&pending.number.to_le_bytes());
        record.extend_from_slice(&pending.seq.to_le_bytes());
        record.extend_from_slice(&pending.leaf);
        record.extend_from_slice(&count.to_le_bytes());
        for hash in &pending.proof {
            record.extend_from_slice(hash);
        }
        spill.writer.write_all(&record).map_err(|e| spill_error("write", &e))
    }

    /// Calls `check` on every proof, in line order, and stops at its first error.
    pub(crate) fn check_each(
        &mut self,
        mut check: impl FnMut(&Pending) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        for pending in &self.memory {
            check(pending)?;
        }
        let Some(spill) = &mut self.spill else { return Ok(()) };
        spill.writer.flush().map_err(|e| spill_error("write", &e))?;
        let file = spill.writer.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(|e| spill_error("read", &e))?;
        let mut reader = BufReader::new(file);
        let mut head = [0u8; 8 + 8 + 32 + 4];
        loop {
            match reader.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(spill_error("read", &e)),
            }
            let (number, rest) = head.split_at(8);
            let (seq, rest) = rest.split_at(8);
            let (leaf, count) = rest.split_at(32);
            let count = u32::from_le_bytes(count.try_into().unwrap_or_default());
            let mut proof = Vec::new();
            for _ in 0..count {
                let mut hash = [0u8; 32];
                reader.read_exact(&mut hash).map_err(|e| spill_error("read", &e))?;
                proof.push(hash);
            }
            check(&Pending {
                number: u64::from_le_bytes(number.try_into().unwrap_or_default()),
                seq: u64::from_le_bytes(seq.try_into().unwrap_or_default()),
                leaf: leaf.try_into().unwrap_or_default(),
                proof,
            })?;
        }
    }

    /// Proofs held in memory (the rest are in the temporary file).
    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.memory.len()
    }
}

fn too_long() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "a proof of more than 2^32 hashes")
}

impl Spill {
    fn create() -> Result<Spill, ExportError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "keyledger-verify-{}-{nanos}-{}.proofs",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| spill_error("create", &e))?;
        // Unlinked at once where the system allows it: nothing is left behind, even after
        // a crash; the open file stays readable.
        let path = std::fs::remove_file(&path).is_err().then_some(path);
        Ok(Spill { writer: BufWriter::new(file), path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(number: u64) -> Pending {
        let hash = |i: u64| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(number * 31 + i).to_le_bytes());
            h
        };
        Pending { number, seq: number * 3, leaf: hash(0), proof: (1..=(number % 24)).map(hash).collect() }
    }

    #[test]
    fn memory_stays_bounded_and_every_proof_comes_back_in_order() {
        let mut proofs = PendingProofs::default();
        let all: Vec<Pending> = (1..=5_000).map(pending).collect();
        for p in &all {
            proofs.push(p.clone()).unwrap();
        }
        assert!(proofs.in_memory() < 100, "{} proofs in memory", proofs.in_memory());
        assert!(proofs.memory_bytes <= MEMORY_BYTES);
        let mut back = Vec::new();
        proofs
            .check_each(|p| {
                back.push(p.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn the_first_error_stops_the_check_in_memory_and_in_the_file() {
        for stop_at in [3, 4_000] {
            let mut proofs = PendingProofs::default();
            for n in 1..=5_000 {
                proofs.push(pending(n)).unwrap();
            }
            let mut checked = 0;
            let result = proofs.check_each(|p| {
                checked += 1;
                if p.number == stop_at {
                    Err(ExportError::Input(format!("bad {}", p.number)))
                } else {
                    Ok(())
                }
            });
            assert_eq!(result, Err(ExportError::Input(format!("bad {stop_at}"))));
            assert_eq!(checked, stop_at);
        }
    }

    #[test]
    fn a_few_proofs_never_touch_the_disk() {
        let mut proofs = PendingProofs::default();
        proofs.push(pending(1)).unwrap();
        assert!(proofs.spill.is_none());
        assert_eq!(proofs.in_memory(), 1);
    }
}
