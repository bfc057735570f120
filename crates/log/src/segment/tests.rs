//! Tests of the segment log through its public API (append, sync, open, reopen, inspect,
//! read), plus the few internals a test must reach to damage files on purpose (the frame and
//! index encodings) or to check the index files directly.

use super::frame::encode_frame;
use super::index::{decode_index, encode_index, load_sealed};
use super::*;
use crate::storage::{FaultSwitch, FaultyStorage, OsStorage};
use proptest::prelude::*;
use std::fs;

fn os() -> Arc<dyn Storage> {
    Arc::new(OsStorage)
}

/// A log over [`FaultyStorage`], and the switch that injects its faults.
fn faulty_log(dir: &Path, options: SegmentOptions) -> (SegmentLog, Arc<FaultSwitch>) {
    let storage = FaultyStorage::new();
    let switch = storage.switch();
    let (log, _) = SegmentLog::open(Arc::new(storage), dir, options).unwrap();
    (log, switch)
}

fn opts(segment_size: u64, index_stride: u64) -> SegmentOptions {
    SegmentOptions { segment_size, index_stride, read_chunk: 256 }
}

/// Deterministic record contents of varying length (0 to ~90 bytes).
fn record(seq: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..(seq * 7 % 23) {
        bytes.extend_from_slice(&(seq * 31 + i).to_le_bytes()[..4]);
    }
    bytes
}

fn append(log: &mut SegmentLog, count: u64) -> u64 {
    let first = log.len();
    let records: Vec<Vec<u8>> = (first..first + count).map(record).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let seq = log.append_batch(&refs).unwrap();
    assert_eq!(seq, first);
    seq
}

fn check_all(reader: &SegmentReader, len: u64) {
    assert_eq!(reader.len(), len);
    for seq in 0..len {
        assert_eq!(reader.read(seq).unwrap(), record(seq), "read({seq})");
    }
    for from in [0, 1, len / 3, len.saturating_sub(1), len] {
        let got: Vec<(u64, Vec<u8>)> = reader.iter(from).map(Result::unwrap).collect();
        let want: Vec<(u64, Vec<u8>)> = (from..len).map(|s| (s, record(s))).collect();
        assert_eq!(got, want, "iter({from})");
    }
    assert!(matches!(reader.read(len), Err(SegmentError::OutOfRange { .. })));
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".log")
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".idx")
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for file in segment_files(from) {
        fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
    }
}

fn cut(file: &Path, len: u64) {
    fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
}

fn append_bytes(file: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new().append(true).open(file).unwrap().write_all(bytes).unwrap();
}

fn flip_byte(file: &Path, offset: u64) {
    let mut bytes = fs::read(file).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(file, bytes).unwrap();
}

#[test]
fn round_trip_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, recovery) = SegmentLog::open(os(), dir.path(), opts(300, 4)).unwrap();
    assert_eq!(recovery, Recovery::default());
    let mut batch = 1;
    while log.len() < 200 {
        append(&mut log, batch);
        batch = batch % 7 + 1;
    }
    log.sync().unwrap();
    assert_eq!(log.durable_len(), log.len());
    let len = log.len();
    let reader = log.reader();
    check_all(&reader, len);
    let segments = reader.segments();
    assert!(segments.len() > 5, "rolled into {} segments", segments.len());
    assert_eq!(segments.iter().map(|s| s.records).sum::<u64>(), len);
    assert_eq!(segments.iter().map(|s| s.bytes).sum::<u64>(), log.bytes_on_disk());
    for segment in &segments {
        assert_eq!(segment.path.file_name().unwrap().to_str().unwrap(), segment_file_name(segment.first_seq));
        assert_eq!(fs::metadata(&segment.path).unwrap().len(), segment.bytes);
    }
    // Located records: offsets chain frame after frame within each segment.
    let mut expected_offset = 0;
    let mut previous: Option<Arc<Path>> = None;
    for located in reader.iter_located(0) {
        let located = located.unwrap();
        if previous.as_ref() != Some(&located.segment) {
            expected_offset = 0;
            previous = Some(located.segment.clone());
        }
        assert_eq!(located.offset, expected_offset);
        assert_eq!(located.bytes, record(located.seq));
        expected_offset += (FRAME_HEADER_LEN + located.bytes.len()) as u64;
    }
    drop(log);
    let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(300, 4)).unwrap();
    assert_eq!(recovery, Recovery { records: len, ..Recovery::default() });
    check_all(&log.reader(), len);
}

#[test]
fn reopen_after_clean_close_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert!(log.is_empty());
    assert_eq!(append(&mut log, 3), 0);
    assert_eq!(append(&mut log, 1), 3);
    assert_eq!(log.append_batch(&[]).unwrap(), 4, "an empty batch writes nothing");
    let bytes = log.bytes_on_disk();
    log.close().unwrap();
    let (mut log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(recovery, Recovery { records: 4, ..Recovery::default() });
    assert_eq!(log.bytes_on_disk(), bytes);
    assert_eq!(append(&mut log, 5), 4);
    log.close().unwrap();
    let (log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    check_all(&log.reader(), 9);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn record_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    let big = vec![7u8; MAX_RECORD_LEN + 1];
    let max = vec![8u8; MAX_RECORD_LEN];
    let err = log.append_batch(&[b"ok", &big]).unwrap_err();
    assert!(matches!(err, SegmentError::RecordTooLarge { len, .. } if len == MAX_RECORD_LEN + 1));
    assert!(!log.is_poisoned());
    assert_eq!(log.len(), 0);
    assert_eq!(log.append_batch(&[b"", &max]).unwrap(), 0);
    log.close().unwrap();
    let (log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(log.reader().read(0).unwrap(), b"");
    assert_eq!(log.reader().read(1).unwrap(), max);
}

/// Builds a log whose batches have the given sizes; returns the byte size of each batch
/// and the file holding the last batch.
fn build(dir: &Path, options: SegmentOptions, batches: &[u64]) -> (Vec<u64>, PathBuf) {
    let (mut log, _) = SegmentLog::open(os(), dir, options).unwrap();
    let mut sizes = Vec::new();
    for &count in batches {
        let before = log.bytes_on_disk();
        append(&mut log, count);
        sizes.push(log.bytes_on_disk() - before);
    }
    let last = log.reader().segments().last().unwrap().path.clone();
    log.close().unwrap();
    (sizes, last)
}

fn torn_tail_every_cut(options: SegmentOptions, batches: &[u64]) {
    let template = tempfile::tempdir().unwrap();
    let (sizes, last_file) = build(template.path(), options.clone(), batches);
    let last_size = *sizes.last().unwrap();
    let file_len = fs::metadata(&last_file).unwrap().len();
    let previous: u64 = batches[..batches.len() - 1].iter().sum();
    let last_count = *batches.last().unwrap();
    let frame_ends: Vec<u64> = {
        let mut end = file_len - last_size;
        (previous..previous + last_count)
            .map(|seq| {
                end += (FRAME_HEADER_LEN + record(seq).len()) as u64;
                end
            })
            .collect()
    };
    for cut_off in 1..=last_size {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let file = dir.path().join(last_file.file_name().unwrap());
        let kept = file_len - cut_off;
        cut(&file, kept);
        let (mut log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
        let whole = frame_ends.iter().filter(|&&end| end <= kept).count() as u64;
        assert_eq!(recovery.records, previous, "cut {cut_off}");
        assert_eq!(recovery.truncated_bytes, last_size - cut_off, "cut {cut_off}");
        assert_eq!(recovery.truncated_records, whole, "cut {cut_off}");
        let prefix = file_len - last_size;
        if prefix == 0 {
            assert!(!file.exists(), "an emptied trailing segment is removed");
            assert_eq!(recovery.removed_segments, 1);
        } else {
            assert_eq!(fs::metadata(&file).unwrap().len(), prefix);
        }
        check_all(&log.reader(), previous);
        append(&mut log, 2);
        log.close().unwrap();
        let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
        assert_eq!(recovery, Recovery { records: previous + 2, ..Recovery::default() });
        check_all(&log.reader(), previous + 2);
    }
}

#[test]
fn torn_tail_sharing_a_segment() {
    torn_tail_every_cut(SegmentOptions::default(), &[3, 1, 4, 5]);
}

#[test]
fn torn_tail_in_a_fresh_segment() {
    // Every batch fills a segment, so the last batch is alone in the last segment.
    torn_tail_every_cut(opts(1, 2), &[2, 3, 4]);
}

#[test]
fn garbage_after_the_last_batch_is_cut() {
    let mut valid_uncommitted = Vec::new();
    encode_frame(&mut valid_uncommitted, b"unfinished", 0);
    encode_frame(&mut valid_uncommitted, b"batch", 0);
    let mut huge_header = Vec::new();
    huge_header.extend_from_slice(&(u32::MAX).to_le_bytes());
    huge_header.extend_from_slice(&[1, 2, 3, 4, 1]);
    let mut pseudo_random = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pseudo_random.push(x as u8);
    }
    let mut bad_flags = Vec::new();
    encode_frame(&mut bad_flags, b"x", 0x80);
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("zero fill", vec![0; 4096], 0),
        ("random bytes", pseudo_random, 0),
        ("valid frames without a commit mark", valid_uncommitted, 2),
        ("a huge length", huge_header, 0),
        ("unknown flags", bad_flags, 0),
        ("a lone byte", vec![1], 0),
    ];
    for (what, garbage, records) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (_, last) = build(dir.path(), opts(200, 3), &[5, 2, 6, 1]);
        let len = fs::metadata(&last).unwrap().len();
        append_bytes(&last, &garbage);
        let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(200, 3)).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                records: 14,
                truncated_bytes: garbage.len() as u64,
                truncated_records: records,
                removed_segments: 0
            },
            "{what}"
        );
        assert_eq!(fs::metadata(&last).unwrap().len(), len, "{what}");
        check_all(&log.reader(), 14);
    }
}

#[test]
fn garbage_only_trailing_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), SegmentOptions::default(), &[4]);
    let stray = dir.path().join(segment_file_name(4));
    fs::write(&stray, [0u8; 100]).unwrap();
    fs::write(dir.path().join(segment_file_name(9)), b"").unwrap();
    fs::write(dir.path().join("notes.txt"), b"not a segment").unwrap();
    let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(
        recovery,
        Recovery { records: 4, truncated_bytes: 100, truncated_records: 0, removed_segments: 2 }
    );
    assert!(!stray.exists());
    assert!(dir.path().join("notes.txt").exists());
    check_all(&log.reader(), 4);
}

fn locate(dir: &Path, options: &SegmentOptions, seq: u64) -> LocatedRecord {
    let (reader, _) = SegmentLog::inspect(os(), dir, options.clone()).unwrap();
    reader.iter_located(seq).next().unwrap().unwrap()
}

/// A log read in full (no index files: as written before they existed, or with every
/// index lost): damage anywhere before the last commit mark fails `open`.
#[test]
fn corruption_in_the_middle_is_an_error_not_a_cut() {
    let options = opts(400, 4);
    let batches = [3, 5, 2, 6, 4, 7, 1, 3, 8, 2, 5, 6];
    let total: u64 = batches.iter().sum();
    // (seq, byte within the frame to flip, expected damage)
    let cases = [
        (2, FRAME_HEADER_LEN as u64 + 1, Damage::Checksum), // body, in an earlier segment
        (9, 5, Damage::Checksum),                           // crc field
        (total - 4, 2, Damage::BadLength(0x0040_0000 | record(total - 4).len() as u32)), // length field
        (total - 2, 8, Damage::BadFlags(0x40)),             // flags, in the last segment
    ];
    for (seq, delta, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), options.clone(), &batches);
        let target = locate(dir.path(), &options, seq);
        let damage = if damage == Damage::BadFlags(0x40) {
            // Flipping the flags byte also breaks the CRC, which is checked first.
            Damage::Checksum
        } else {
            damage
        };
        flip_byte(&target.segment, target.offset + delta);
        for index in index_files(dir.path()) {
            fs::remove_file(index).unwrap();
        }
        let lens: Vec<u64> =
            segment_files(dir.path()).iter().map(|f| fs::metadata(f).unwrap().len()).collect();
        let err = SegmentLog::open(os(), dir.path(), options.clone()).unwrap_err();
        match &err {
            SegmentError::Corrupt { path, offset, seq: bad, damage: found } => {
                assert_eq!(path.as_path(), &*target.segment);
                assert_eq!(*offset, target.offset);
                assert_eq!(*bad, seq);
                assert_eq!(*found, damage);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let message = err.to_string();
        assert!(message.contains(&format!("record seq {seq}")), "{message}");
        let after: Vec<u64> =
            segment_files(dir.path()).iter().map(|f| fs::metadata(f).unwrap().len()).collect();
        assert_eq!(lens, after, "nothing is cut");
        assert!(matches!(
            SegmentLog::inspect(os(), dir.path(), options.clone()),
            Err(SegmentError::Corrupt { seq: bad, .. }) if bad == seq
        ));
    }
}

#[test]
fn sealed_segments_are_indexed_and_not_read_again_on_open() {
    let options = opts(400, 4);
    let batches = [3, 5, 2, 6, 4, 7, 1, 3, 8, 2, 5, 6];
    let total: u64 = batches.iter().sum();
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), options.clone(), &batches);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "the test needs sealed segments");
    assert_eq!(index_files(dir.path()).len(), segments.len() - 1, "every sealed segment is indexed");

    // Damage the body of seq 1, in the first (sealed) segment, before its last indexed
    // offset: the index is trusted, so open succeeds, the reads that cross the damage fail,
    // and a full check (what `log verify` runs) names it.
    let target = locate(dir.path(), &options, 1);
    flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64 + 1);
    let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
    assert_eq!(recovery.records, total);
    let reader = log.reader();
    assert!(matches!(reader.read(1), Err(SegmentError::Corrupt { seq: 1, .. })));
    assert_eq!(reader.read(total - 1).unwrap(), record(total - 1), "the rest reads fine");
    assert!(matches!(
        SegmentLog::inspect(os(), dir.path(), options.clone()),
        Err(SegmentError::Corrupt { seq: 1, .. })
    ));
    drop(log);

    // Without its index the segment is read in full: open names the damage, cuts nothing.
    fs::remove_file(dir.path().join(index_file_name(0))).unwrap();
    assert!(matches!(
        SegmentLog::open(os(), dir.path(), options.clone()),
        Err(SegmentError::Corrupt { seq: 1, .. })
    ));

    // A damaged or stale index is ignored (the segment read in full) and rewritten.
    flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64 + 1);
    let second = index_files(dir.path())[0].clone();
    flip_byte(&second, 12);
    let (log, _) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
    check_all(&log.reader(), total);
    drop(log);
    assert_eq!(index_files(dir.path()).len(), segments.len() - 1, "missing and damaged indexes rewritten");
    let first = fs::read(dir.path().join(index_file_name(0))).unwrap();
    assert!(decode_index(&first).is_some());
    assert!(decode_index(&fs::read(&second).unwrap()).is_some());
}

#[test]
fn an_index_that_does_not_match_its_segment_is_not_used() {
    let options = opts(400, 4);
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), options.clone(), &[3, 5, 2, 6, 4, 7, 1, 3]);
    let segments = segment_files(dir.path());
    let index = dir.path().join(index_file_name(0));
    let (_, records, end, stride, sparse) = decode_index(&fs::read(&index).unwrap()).unwrap();
    assert!(load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &options).unwrap().is_some());
    // An index (with a valid CRC) off by one record, with as many indexed offsets: only
    // the tail check, which counts the frames after the last indexed offset, can refuse it.
    let claimed = if records % stride == 1 { records + 1 } else { records - 1 };
    assert_eq!(claimed.div_ceil(stride), records.div_ceil(stride));
    fs::write(&index, encode_index(0, claimed, end, stride, &sparse)).unwrap();
    let sealed = load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &options).unwrap();
    assert!(sealed.is_none());
    // Another stride than the log's: not used either.
    let other = SegmentOptions { index_stride: 8, ..options.clone() };
    let sealed = load_sealed(&OsStorage::new(), dir.path(), segments[0].clone(), 0, &other).unwrap();
    assert!(sealed.is_none());
    // Either way open reads the segment and sees every record.
    let (log, recovery) = SegmentLog::open(os(), dir.path(), options).unwrap();
    check_all(&log.reader(), recovery.records);
}

#[test]
fn reader_detects_damage_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(os(), dir.path(), opts(1 << 20, 8)).unwrap();
    append(&mut log, 40);
    let reader = log.reader();
    let target = reader.iter_located(21).next().unwrap().unwrap();
    flip_byte(&target.segment, target.offset + FRAME_HEADER_LEN as u64);
    assert!(matches!(reader.read(21), Err(SegmentError::Corrupt { seq: 21, .. })));
    assert!(matches!(reader.read(22), Err(SegmentError::Corrupt { seq: 21, .. })), "scans past 21");
    assert_eq!(reader.read(16).unwrap(), record(16));
    let results: Vec<_> = reader.iter(0).collect();
    assert_eq!(results.len(), 22, "the iterator stops after the first error");
    assert!(matches!(results[21], Err(SegmentError::Corrupt { seq: 21, .. })));
}

#[test]
fn missing_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(100, 4), &[3, 3, 3, 3, 3, 3]);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        SegmentLog::open(os(), dir.path(), opts(100, 4)),
        Err(SegmentError::Discontinuity { .. })
    ));
    fs::remove_file(&files[0]).unwrap();
    assert!(matches!(
        SegmentLog::open(os(), dir.path(), opts(100, 4)),
        Err(SegmentError::Discontinuity { expected: 0, .. })
    ));
}

#[test]
fn unfinished_batch_before_a_later_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), opts(100, 4), &[3, 3, 3, 3, 3, 3]);
    let files = segment_files(dir.path());
    let mut frame = Vec::new();
    encode_frame(&mut frame, b"stray", 0);
    append_bytes(&files[0], &frame);
    assert!(matches!(
        SegmentLog::open(os(), dir.path(), opts(100, 4)),
        Err(SegmentError::Corrupt { damage: Damage::MissingCommitMark, .. })
    ));
}

#[test]
fn inspect_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, last) = build(dir.path(), SegmentOptions::default(), &[2, 2]);
    append_bytes(&last, &[0; 10]);
    let (reader, recovery) = SegmentLog::inspect(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(recovery.truncated_bytes, 10);
    check_all(&reader, 4);
    assert_eq!(fs::metadata(&last).unwrap().len(), reader.bytes_on_disk() + 10);
    let missing = dir.path().join("missing");
    assert!(matches!(
        SegmentLog::inspect(os(), &missing, SegmentOptions::default()),
        Err(SegmentError::Io { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn write_failure_poisons_and_shows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 3);
    log.sync().unwrap();
    switch.set_fail_writes(true);
    let err = log.append_batch(&[b"a", b"b"]).unwrap_err();
    assert!(matches!(&err, SegmentError::Io { op: "write", .. }), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(log.is_poisoned());
    switch.clear();
    assert!(matches!(log.append_batch(&[b"c"]), Err(SegmentError::Poisoned)));
    assert!(matches!(log.sync(), Err(SegmentError::Poisoned)));
    assert_eq!(log.len(), 3);
    check_all(&log.reader(), 3);
    drop(log);
    let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(recovery, Recovery { records: 3, ..Recovery::default() });
    check_all(&log.reader(), 3);
}

#[test]
fn fsync_failure_poisons_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 3);
    switch.set_fail_sync(true);
    let syncs = switch.syncs();
    assert!(matches!(log.sync(), Err(SegmentError::Io { op: "fsync", .. })));
    assert_eq!(switch.syncs(), syncs + 1);
    switch.clear();
    assert!(matches!(log.sync(), Err(SegmentError::Poisoned)));
    assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
    assert_eq!(switch.syncs(), syncs + 1, "a failed fsync is never retried");
    assert_eq!(log.durable_len(), 0);
}

#[test]
fn fsync_failure_when_rolling_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
    append(&mut log, 3);
    switch.set_fail_sync(true);
    assert!(log.append_batch(&[b"next segment"]).is_err());
    assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
    assert_eq!(log.reader().len(), 3);
}

#[test]
fn short_write_poisons_and_recovery_removes_the_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 4);
    let reader = log.reader();
    let bytes = log.bytes_on_disk();
    switch.set_short_write(true);
    let records: Vec<Vec<u8>> = (4..9).map(record).collect();
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    assert!(matches!(log.append_batch(&refs), Err(SegmentError::Io { .. })));
    let batch_bytes: u64 = records.iter().map(|r| (FRAME_HEADER_LEN + r.len()) as u64).sum();
    let file = &reader.segments()[0].path;
    assert_eq!(fs::metadata(file).unwrap().len(), bytes + batch_bytes / 2, "half the batch reached the file");
    assert_eq!((log.len(), reader.len(), log.bytes_on_disk()), (4, 4, bytes), "but is not visible");
    assert!(matches!(log.append_batch(&[b"x"]), Err(SegmentError::Poisoned)));
    check_all(&reader, 4);
    drop(log);
    switch.clear();
    let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.truncated_bytes, batch_bytes / 2);
    assert_eq!(fs::metadata(file).unwrap().len(), bytes);
    check_all(&log.reader(), 4);
}

#[test]
fn disk_full_midway_through_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 4);
    switch.set_space_left(Some(30));
    let big = vec![1u8; 100];
    assert!(log.append_batch(&[&big, &big]).is_err());
    drop(log);
    let (log, recovery) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (4, 30));
    check_all(&log.reader(), 4);
}

#[test]
fn reopen_after_a_failed_fsync_cuts_to_the_durable_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 3);
    log.sync().unwrap();
    let bytes = log.bytes_on_disk();
    let reader = log.reader();
    append(&mut log, 2);
    switch.set_fail_sync(true);
    assert!(log.sync().is_err());
    assert!(log.sync_failed());
    switch.clear();
    let file = &reader.segments()[0].path;
    assert!(fs::metadata(file).unwrap().len() > bytes, "the page cache still shows 5 records");
    let recovery = log.reopen(None).unwrap();
    assert_eq!((recovery.records, recovery.truncated_records), (3, 2));
    assert_eq!(fs::metadata(file).unwrap().len(), bytes);
    assert!(!log.is_poisoned() && !log.sync_failed());
    assert_eq!((log.len(), log.durable_len(), reader.len()), (3, 3, 3), "readers see the reopened log");
    check_all(&reader, 3);
    append(&mut log, 2);
    log.sync().unwrap();
    check_all(&reader, 5);
}

#[test]
fn reopen_after_a_failed_fsync_removes_a_segment_past_the_durable_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
    append(&mut log, 3);
    log.sync().unwrap();
    append(&mut log, 2); // rolls: a second segment starting at record 3
    assert_eq!(log.reader().segments().len(), 2);
    switch.set_fail_sync(true);
    assert!(log.sync().is_err());
    switch.clear();
    let recovery = log.reopen(None).unwrap();
    assert_eq!((recovery.records, recovery.removed_segments), (3, 1));
    assert_eq!(segment_files(dir.path()).len(), 1);
    check_all(&log.reader(), 3);
    append(&mut log, 1);
    log.sync().unwrap();
    drop(log);
    let (log, recovery) = SegmentLog::open(os(), dir.path(), opts(1, 4)).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (4, 0));
    check_all(&log.reader(), 4);
}

#[test]
fn reopen_after_a_failed_write_keeps_complete_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 4);
    switch.set_short_write(true);
    assert!(log.append_batch(&[b"torn", b"batch"]).is_err());
    assert!(!log.sync_failed(), "a failed write is not a failed fsync");
    switch.clear();
    let recovery = log.reopen(None).unwrap();
    assert_eq!(recovery.records, 4, "the unsynced but complete batches stay");
    assert!(recovery.truncated_bytes > 0, "the torn batch is cut");
    assert_eq!(log.durable_len(), 4, "and the reopen fsynced them");
    check_all(&log.reader(), 4);
}

#[test]
fn reopen_at_most_cuts_a_refused_batch_but_never_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(os(), dir.path(), SegmentOptions::default()).unwrap();
    append(&mut log, 3);
    log.sync().unwrap();
    append(&mut log, 2);
    assert_eq!(log.reopen(Some(3)).unwrap().records, 3, "the refused batch is cut");
    check_all(&log.reader(), 3);
    append(&mut log, 2);
    log.sync().unwrap();
    assert_eq!(log.reopen(Some(1)).unwrap().records, 5, "never below the durable length");
    check_all(&log.reader(), 5);
}

#[test]
fn a_failed_reopen_distrusts_the_unsynced_tail_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 2);
    log.sync().unwrap();
    append(&mut log, 3);
    switch.set_fail_writes(true);
    assert!(log.append_batch(&[b"x"]).is_err());
    switch.set_fail_writes(false);
    switch.set_fail_sync(true);
    assert!(log.reopen(None).is_err(), "its fsync of the tail fails");
    assert!(log.is_poisoned() && log.sync_failed());
    switch.clear();
    assert_eq!(log.reopen(None).unwrap().records, 2, "only what an fsync confirmed");
    check_all(&log.reader(), 2);
}

/// A sync run elsewhere ([`SegmentLog::begin_sync`]) makes durable what was appended before
/// it was taken, not what was appended while it ran, which the next sync covers.
#[test]
fn a_pending_sync_covers_what_was_appended_before_it_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 3);
    let mut pending = log.begin_sync().unwrap();
    append(&mut log, 2);
    let syncs = switch.syncs();
    let result = std::thread::spawn(move || {
        let result = pending.run();
        (pending, result)
    })
    .join()
    .unwrap();
    assert_eq!(switch.syncs(), syncs + 1, "the fsync ran on the other thread");
    assert_eq!(log.durable_len(), 0, "not durable before its outcome is recorded");
    log.end_sync(result.0.mark(), result.1).unwrap();
    assert_eq!((log.durable_len(), log.len()), (3, 5));
    log.sync().unwrap();
    assert_eq!(log.durable_len(), 5);
    let syncs = switch.syncs();
    log.sync().unwrap();
    assert_eq!(switch.syncs(), syncs, "nothing left to sync");
}

/// A pending sync that fails poisons the log and distrusts everything past what was durable
/// before it, although an append after it and a sync of the rest may have looked fine.
#[test]
fn a_failed_pending_sync_distrusts_everything_past_what_was_durable_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 2);
    log.sync().unwrap();
    append(&mut log, 2);
    let mut pending = log.begin_sync().unwrap();
    append(&mut log, 1);
    log.sync().unwrap();
    assert_eq!(log.durable_len(), 5, "the later sync, on the other handle, succeeded");
    switch.set_fail_sync(true);
    let result = pending.run();
    switch.clear();
    assert!(matches!(log.end_sync(pending.mark(), result), Err(SegmentError::Io { op: "fsync", .. })));
    assert!(log.is_poisoned() && log.sync_failed());
    assert_eq!(log.durable_len(), 2);
    let recovery = log.reopen(None).unwrap();
    assert_eq!((recovery.records, recovery.truncated_records), (2, 3));
    check_all(&log.reader(), 2);
}

/// The log rolls to a new segment only once the old one is durable, also while a sync of
/// it runs elsewhere: un-synced bytes only ever sit in the last segment.
#[test]
fn rolling_while_a_sync_is_pending_syncs_the_old_segment_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
    append(&mut log, 2);
    let pending = log.begin_sync().unwrap();
    let syncs = switch.syncs();
    append(&mut log, 1);
    assert!(switch.syncs() > syncs);
    assert_eq!(log.durable_len(), 2, "the roll fsynced the old segment itself");
    log.end_sync(pending.mark(), Ok(())).unwrap();
    assert_eq!(log.durable_len(), 2);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

/// The kernel reports a writeback error once: after a roll's fsync failed, a pending sync of
/// the same file that then reports success is not believed.
#[test]
fn a_pending_sync_reporting_success_after_a_failed_fsync_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), opts(1, 4));
    append(&mut log, 2);
    let pending = log.begin_sync().unwrap();
    switch.set_fail_sync(true);
    assert!(log.append_batch(&[b"next segment"]).is_err(), "the roll's fsync fails");
    switch.clear();
    assert!(log.end_sync(pending.mark(), Ok(())).is_err());
    assert_eq!(log.durable_len(), 0);
    assert!(log.sync_failed());
}

#[test]
fn one_fdatasync_per_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, switch) = faulty_log(dir.path(), SegmentOptions::default());
    append(&mut log, 1); // creates the segment: one directory fsync
    let (syncs, writes) = (switch.syncs(), switch.writes());
    for _ in 0..5 {
        append(&mut log, 10);
    }
    assert_eq!(switch.writes(), writes + 5, "one write per batch");
    log.sync().unwrap();
    assert_eq!(switch.syncs(), syncs + 1);
    log.sync().unwrap();
    assert_eq!(switch.syncs(), syncs + 1, "nothing to sync");
}

#[test]
fn concurrent_readers_see_only_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(os(), dir.path(), opts(2048, 4)).unwrap();
    let reader = log.reader();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Record = [batch size, index in batch, seq as 8 bytes, padding].
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seq = 0u64;
            for batch in 0..400u64 {
                let size = batch % 6 + 1;
                let records: Vec<Vec<u8>> = (0..size)
                    .map(|i| {
                        let mut r = vec![size as u8, i as u8];
                        r.extend_from_slice(&(seq + i).to_le_bytes());
                        r.resize(10 + (seq + i) as usize % 40, 0xaa);
                        r
                    })
                    .collect();
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                assert_eq!(log.append_batch(&refs).unwrap(), seq);
                seq += size;
                if batch % 50 == 0 {
                    log.sync().unwrap();
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            log
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let reader = reader.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut checks = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || checks == 0 {
                    let len = reader.len();
                    if len == 0 {
                        continue;
                    }
                    let last = reader.read(len - 1).unwrap();
                    assert_eq!(last[1] + 1, last[0], "the last visible record ends its batch");
                    // The log may have grown since `len`: the iterator's own end is
                    // fixed when it is created, and must also end a batch.
                    let (mut count, mut last_commit) = (0, false);
                    for item in reader.iter_located(len.saturating_sub(37)) {
                        let item = item.unwrap();
                        assert_eq!(item.bytes[2..10], item.seq.to_le_bytes());
                        assert_eq!(item.commit, item.bytes[1] + 1 == item.bytes[0]);
                        last_commit = item.commit;
                        count += 1;
                    }
                    assert!(count >= len.min(37));
                    assert!(last_commit);
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let log = writer.join().unwrap();
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert!(log.reader().segments().len() > 3);
    assert_eq!(log.len(), (0..400u64).map(|b| b % 6 + 1).sum::<u64>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_batches_and_truncation(
        batches in proptest::collection::vec(1u64..8, 1..25),
        segment_size in 64u64..1024,
        stride in 1u64..9,
        cut_fraction in 0.0f64..=1.0,
        mut garbage in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let options = opts(segment_size, stride);
        let dir = tempfile::tempdir().unwrap();
        let (sizes, last) = build(dir.path(), options.clone(), &batches);
        let original = fs::read(&last).unwrap();
        let len = original.len() as u64;
        let keep = (len as f64 * (1.0 - cut_fraction)).round() as u64;
        // Garbage that starts with the very byte that was cut could put a batch back
        // whole; make it differ so the cut batch is really damaged.
        if let (Some(first), Some(&cut_byte)) = (garbage.first_mut(), original.get(keep as usize))
            && *first == cut_byte
        {
            *first ^= 0xff;
        }
        cut(&last, keep);
        append_bytes(&last, &garbage);
        // Batches fully inside the kept bytes survive, earlier segments entirely.
        let mut end_in_last = len;
        let mut expected: u64 = batches.iter().sum();
        let mut expected_file = len;
        for (count, size) in batches.iter().zip(&sizes).rev() {
            if end_in_last <= keep || end_in_last == 0 {
                break;
            }
            expected -= count;
            end_in_last -= size;
            expected_file = end_in_last;
        }
        let (log, recovery) = SegmentLog::open(os(), dir.path(), options.clone()).unwrap();
        prop_assert_eq!(recovery.records, expected);
        prop_assert_eq!(recovery.truncated_bytes, keep + garbage.len() as u64 - expected_file);
        if expected_file == 0 {
            prop_assert!(!last.exists());
        } else {
            prop_assert_eq!(fs::metadata(&last).unwrap().len(), expected_file);
        }
        check_all(&log.reader(), expected);
    }
}
