//! Recovery: deciding from what is on disk which records the log holds, and cutting the rest.
//!
//! It exists so that [`SegmentLog::open`], [`SegmentLog::reopen`] and [`SegmentLog::inspect`]
//! decide in one place, and from the files alone (never from what a process remembers). It
//! applies the torn-tail rule stated in the [`super`] docs: every segment is scanned frame by
//! frame (except a sealed segment whose index file still matches it, see the index module),
//! a missing segment is a [`SegmentError::Discontinuity`], and a damaged frame is a cut or a
//! [`SegmentError::Corrupt`] depending on whether committed data follows it.
//!
//! Recovery runs in two steps. [`plan_recovery`] only reads, and returns what it would keep
//! and cut as a [`Plan`]; a plan that finds corruption fails before anything on disk is
//! changed, and [`SegmentLog::inspect`] stops at the plan, so `log verify` changes nothing.
//! [`recover`] then carries the plan out: it truncates the torn tail and fsyncs the tail
//! segment (which also makes durable what a crashed process left in the page cache), removes
//! trailing segments without committed records and fsyncs the directory. Given a limit (the
//! last length an fsync confirmed, by the fail-closed rule in the [`super`] docs), it first
//! cuts the plan back to that many records, and fails with [`SegmentError::Lost`] if the
//! disk holds fewer.

#[cfg(doc)]
use super::SegmentLog;
use super::frame::{FLAG_COMMIT, FrameCursor, Step, chain_reaches_commit};
use super::index::{index_file_name, load_sealed};
use super::scanned::Scanned;
use super::{
    Active, Recovery, SegmentError, SegmentOptions, io_err, parse_segment_file_name, segment_file_name,
};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn scan_segment(
    storage: &dyn Storage,
    path: PathBuf,
    first_seq: u64,
    options: &SegmentOptions,
) -> Result<Scanned, SegmentError> {
    let file: Arc<dyn StorageFile> = storage.open_read(&path).map_err(io_err("open", &path))?.into();
    let file_len = file.len().map_err(io_err("stat", &path))?;
    let path: Arc<Path> = path.into();
    let mut cursor = FrameCursor::new(file.clone(), path.clone(), 0, file_len, first_seq, options.read_chunk);
    let stride = options.index_stride;
    let (mut records, mut end, mut uncommitted, mut sparse, mut damage) =
        (0u64, 0u64, 0u64, Vec::new(), None);
    loop {
        match cursor.next_frame()? {
            Step::Frame(frame) => {
                if (records + uncommitted).is_multiple_of(stride) {
                    sparse.push(frame.offset);
                }
                if frame.flags & FLAG_COMMIT != 0 {
                    records += uncommitted + 1;
                    uncommitted = 0;
                    end = cursor.pos;
                } else {
                    uncommitted += 1;
                }
            }
            Step::End => break,
            Step::Damaged { offset, damage: what } => {
                damage = Some((offset, what));
                break;
            }
        }
    }
    sparse.truncate(records.div_ceil(stride) as usize);
    let resumes = match damage {
        Some((offset, _)) if offset + 1 < file_len => {
            let mut rest = vec![0u8; (file_len - offset - 1) as usize];
            file.read_exact_at(&mut rest, offset + 1).map_err(io_err("read", &path))?;
            (0..rest.len()).any(|i| chain_reaches_commit(&rest[i..]))
        }
        _ => false,
    };
    Ok(Scanned {
        first_seq,
        path,
        file,
        file_len,
        records,
        end,
        sparse,
        uncommitted,
        damage,
        resumes,
        from_index: false,
    })
}

/// What recovery decided: the segments kept, the cut, the files to remove.
pub(super) struct Plan {
    pub(super) kept: Vec<Scanned>,
    removed: Vec<Scanned>,
    pub(super) recovery: Recovery,
}

pub(super) fn plan_recovery(
    storage: &dyn Storage,
    dir: &Path,
    options: &SegmentOptions,
    create: bool,
) -> Result<Plan, SegmentError> {
    let names = match storage.list_dir(dir) {
        Ok(names) => names,
        Err(error) if create && error.kind() == io::ErrorKind::NotFound => {
            storage.create_dir_all(dir).map_err(io_err("create directory", dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage.sync_dir(parent).map_err(io_err("fsync directory", parent))?;
            }
            Vec::new()
        }
        Err(error) => return Err(io_err("list directory", dir)(error)),
    };
    let mut firsts = Vec::new();
    for name in names {
        match parse_segment_file_name(&name) {
            Some(first) => firsts.push(first),
            None if name.starts_with("seg-") && name.ends_with(".idx") => {}
            None => {
                tracing::warn!(dir = %dir.display(), file = %name, "ignoring a file that is not a segment")
            }
        }
    }
    firsts.sort_unstable();
    let mut scanned = Vec::with_capacity(firsts.len());
    let last = firsts.last().copied();
    for first in firsts {
        let path = dir.join(segment_file_name(first));
        // `open` (create) trusts sealed segments' index files; `inspect` checks every frame.
        let sealed = if create && Some(first) != last {
            load_sealed(storage, dir, path.clone(), first, options)?
        } else {
            None
        };
        scanned.push(match sealed {
            Some(sealed) => sealed,
            None => scan_segment(storage, path, first, options)?,
        });
    }

    // The last segment holding committed data (or damage followed by committed data).
    let has_data = |s: &Scanned| s.records > 0 || s.resumes;
    let last_with_data = scanned.iter().rposition(has_data);
    let mut expected = 0;
    for (i, segment) in scanned.iter().enumerate() {
        if last_with_data.is_none_or(|last| i > last) {
            break;
        }
        if segment.first_seq != expected {
            return Err(SegmentError::Discontinuity {
                path: segment.path.to_path_buf(),
                expected,
                found: segment.first_seq,
            });
        }
        if let Some((offset, seq, damage)) = segment.problem()
            && (segment.resumes || Some(i) != last_with_data)
        {
            return Err(SegmentError::Corrupt { path: segment.path.to_path_buf(), offset, seq, damage });
        }
        expected += segment.records;
    }

    let keep = last_with_data.map_or(0, |last| last + 1);
    let removed = scanned.split_off(keep);
    let mut recovery = Recovery { records: expected, ..Recovery::default() };
    if let Some(tail) = scanned.last() {
        recovery.truncated_bytes += tail.file_len - tail.end;
        recovery.truncated_records += tail.uncommitted;
    }
    for segment in &removed {
        recovery.truncated_bytes += segment.file_len;
        recovery.truncated_records += segment.uncommitted;
        recovery.removed_segments += 1;
    }
    Ok(Plan { kept: scanned, removed, recovery })
}

/// Cuts a recovery plan back to its first `limit` records (the last length an fsync
/// confirmed): whole segments past it are removed, the one holding record `limit` is cut at
/// that record's frame. Fails if the plan holds fewer than `limit` records.
fn limit_plan(plan: &mut Plan, limit: u64, options: &SegmentOptions) -> Result<(), SegmentError> {
    let found = plan.recovery.records;
    if limit > found {
        return Err(SegmentError::Lost { durable: limit, found });
    }
    if limit == found {
        return Ok(());
    }
    // The first kept segment that holds record `limit` (every kept segment holds records).
    let at = plan.kept.iter().position(|s| s.first_seq + s.records > limit).unwrap_or(plan.kept.len());
    let split = match plan.kept.get_mut(at) {
        Some(segment) if segment.first_seq < limit => {
            let local = limit - segment.first_seq;
            let stride = options.index_stride;
            let mut cursor = FrameCursor::new(
                segment.file.clone(),
                segment.path.clone(),
                segment.sparse[(local / stride) as usize],
                segment.end,
                segment.first_seq + local / stride * stride,
                options.read_chunk,
            );
            for _ in 0..local % stride {
                cursor.expect_frame()?;
            }
            segment.uncommitted += segment.records - local;
            segment.records = local;
            segment.end = cursor.pos;
            segment.sparse.truncate(local.div_ceil(stride) as usize);
            at + 1
        }
        _ => at,
    };
    let mut cut = plan.kept.split_off(split);
    for segment in &mut cut {
        segment.uncommitted += segment.records;
        segment.records = 0;
    }
    cut.append(&mut plan.removed);
    plan.removed = cut;
    let mut recovery = Recovery { records: limit, ..Recovery::default() };
    if let Some(tail) = plan.kept.last() {
        recovery.truncated_bytes += tail.file_len - tail.end;
        recovery.truncated_records += tail.uncommitted;
    }
    for segment in &plan.removed {
        recovery.truncated_bytes += segment.file_len;
        recovery.truncated_records += segment.uncommitted;
        recovery.removed_segments += 1;
    }
    plan.recovery = recovery;
    Ok(())
}

/// Recovers `dir` (at most `limit` records), cutting on disk what the plan cuts: the torn
/// tail is truncated and the tail segment fsynced, trailing segments are removed. Returns
/// the kept segments, the tail opened for appending, and what was cut.
pub(super) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    options: &SegmentOptions,
    limit: Option<u64>,
) -> Result<Recovered, SegmentError> {
    let mut plan = plan_recovery(storage, dir, options, true)?;
    if let Some(limit) = limit {
        limit_plan(&mut plan, limit, options)?;
    }
    let mut active = None;
    if let Some(tail) = plan.kept.last() {
        let mut file = storage.open_append(&tail.path).map_err(io_err("open", &tail.path))?;
        if tail.file_len != tail.end {
            tracing::warn!(
                segment = %tail.path.display(),
                bytes = tail.file_len - tail.end,
                records = tail.uncommitted,
                "cutting the unfinished tail of the log"
            );
            file.set_len(tail.end).map_err(io_err("truncate", &tail.path))?;
        }
        // Also makes durable what a crashed process left in the page cache.
        file.sync_data().map_err(io_err("fsync", &tail.path))?;
        active = Some(Active {
            file,
            path: tail.path.clone(),
            first_seq: tail.first_seq,
            size: tail.end,
            dirty: false,
        });
    }
    for segment in &plan.removed {
        tracing::warn!(segment = %segment.path.display(), "removing a trailing segment without committed records");
        storage.remove_file(&segment.path).map_err(io_err("remove", &segment.path))?;
        let index = dir.join(index_file_name(segment.first_seq));
        match storage.remove_file(&index) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_err("remove", &index)(error)),
        }
    }
    if !plan.removed.is_empty() {
        storage.sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    }
    let unindexed: Vec<u64> = match plan.kept.split_last() {
        Some((_, sealed)) => sealed.iter().filter(|s| !s.from_index).map(|s| s.first_seq).collect(),
        None => Vec::new(),
    };
    Ok(Recovered { kept: plan.kept, active, recovery: plan.recovery, unindexed })
}

/// What [`recover`] found and kept.
pub(super) struct Recovered {
    pub(super) kept: Vec<Scanned>,
    /// The segment to append to, cut to its last committed batch.
    pub(super) active: Option<Active>,
    pub(super) recovery: Recovery,
    /// First seqs of the sealed segments that were read in full, not from an index file.
    pub(super) unindexed: Vec<u64>,
}
