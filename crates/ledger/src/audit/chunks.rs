//! Per-event rows folded into chunks: one redb row holds up to [`CHUNK_ENTRIES`] events of
//! one prefix (a key's usage events, a key's lifecycle events), so folding a batch costs one
//! row write per prefix and full chunk instead of one B-tree insert per event.
//!
//! A chunk's key is `prefix ‖ seq of its first entry` (8 bytes, big-endian), its value the
//! entries in seq order, each `seq (8) ‖ payload (W)`. New events of a prefix go to its last
//! chunk until it holds [`CHUNK_ENTRIES`], then start a new one keyed by their own seq. So
//! where chunks begin depends only on the events, never on where batches began: a rebuild
//! from the log writes the same rows as the incremental folding. A reader finds the events
//! of a seq window by starting at the last chunk that begins at or before the window.

use super::{be_u64, key_number};
use crate::projection::ProjectionError;
use redb::{ReadableTable, Table};

/// Events per chunk: a chunk of usage events (29 bytes each) stays under 2 KiB, half a page.
pub(crate) const CHUNK_ENTRIES: usize = 64;

/// The key of the chunk of `prefix` that begins at `seq` (`K` = prefix length + 8).
pub(crate) fn chunk_key<const K: usize>(prefix: &[u8], seq: u64) -> [u8; K] {
    debug_assert_eq!(prefix.len() + 8, K, "a chunk prefix of the table's width");
    let mut key = [0u8; K];
    key[..K - 8].copy_from_slice(prefix);
    key[K - 8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Appends a batch's `entries` (prefix, seq, payload; in any order) to the chunks of their
/// prefixes; `stored` says whether a prefix may already have chunks (see [`append`]).
pub(crate) fn append_all<const P: usize, const K: usize, const W: usize>(
    table: &mut Table<'_, &'static [u8; K], &'static [u8]>,
    entries: &mut [([u8; P], u64, [u8; W])],
    stored: impl Fn(&[u8; P]) -> bool,
    buffer: &mut Vec<u8>,
) -> Result<(), ProjectionError> {
    // Each entry has its own seq, so this orders every prefix's entries by seq.
    entries.sort_unstable_by_key(|entry| (key_number(&entry.0), entry.1));
    for group in entries.chunk_by(|a, b| a.0 == b.0) {
        let prefix = &group[0].0;
        let payloads = group.iter().map(|(_, seq, payload)| (*seq, *payload));
        append(table, prefix, stored(prefix), payloads, buffer)?;
    }
    Ok(())
}

/// Appends `entries` (seq-ordered, all of `prefix`, after every stored one) to the chunks of
/// `prefix`: the last stored chunk is filled up first. `stored` false says that `prefix` has
/// no chunk yet (its key or address was first seen in this batch), which saves the lookup.
fn append<const K: usize, const W: usize>(
    table: &mut Table<'_, &'static [u8; K], &'static [u8]>,
    prefix: &[u8],
    stored: bool,
    entries: impl Iterator<Item = (u64, [u8; W])>,
    buffer: &mut Vec<u8>,
) -> Result<(), ProjectionError> {
    let entry_len = 8 + W;
    buffer.clear();
    let mut current: Option<[u8; K]> = None;
    let first = chunk_key::<K>(prefix, 0);
    let last = chunk_key::<K>(prefix, u64::MAX);
    debug_assert!(
        stored || table.range::<&[u8; K]>(&first..=&last)?.next().is_none(),
        "a prefix said to be new has a stored chunk"
    );
    if stored && let Some(row) = table.range::<&[u8; K]>(&first..=&last)?.next_back() {
        let (key, value) = row?;
        if value.value().len() < CHUNK_ENTRIES * entry_len {
            current = Some(*key.value());
            buffer.extend_from_slice(value.value());
        }
    }
    for (seq, payload) in entries {
        // The buffer holds entries only while a chunk is current.
        if buffer.len() >= CHUNK_ENTRIES * entry_len
            && let Some(key) = current.take()
        {
            table.insert(&key, buffer.as_slice())?;
            buffer.clear();
        }
        current.get_or_insert_with(|| chunk_key::<K>(prefix, seq));
        buffer.extend_from_slice(&seq.to_be_bytes());
        buffer.extend_from_slice(&payload);
    }
    if let Some(key) = current {
        table.insert(&key, buffer.as_slice())?;
    }
    Ok(())
}

/// Calls `visit` with each event of `prefix` whose seq is in `[lo, hi)`, in seq order, until
/// it answers false.
pub(crate) fn scan<const K: usize, const W: usize>(
    table: &impl ReadableTable<&'static [u8; K], &'static [u8]>,
    prefix: &[u8],
    lo: u64,
    hi: u64,
    mut visit: impl FnMut(u64, &[u8; W]) -> Result<bool, ProjectionError>,
) -> Result<(), ProjectionError> {
    if lo >= hi {
        return Ok(());
    }
    let first = chunk_key::<K>(prefix, 0);
    let at_lo = chunk_key::<K>(prefix, lo);
    let start = match table.range::<&[u8; K]>(&first..=&at_lo)?.next_back() {
        Some(row) => *row?.0.value(),
        None => at_lo,
    };
    let end = chunk_key::<K>(prefix, hi);
    for row in table.range::<&[u8; K]>(&start..&end)? {
        let (_, value) = row?;
        let value = value.value();
        if value.is_empty() || value.len() % (8 + W) != 0 {
            return Err(ProjectionError::Corrupt("an audit chunk's length".into()));
        }
        for entry in value.chunks_exact(8 + W) {
            let seq = be_u64(&entry[..8]);
            if seq < lo {
                continue;
            }
            if seq >= hi {
                return Ok(());
            }
            let mut payload = [0u8; W];
            payload.copy_from_slice(&entry[8..]);
            if !visit(seq, &payload)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<&[u8; 9], &[u8]> = TableDefinition::new("chunks");

    fn payload(seq: u64) -> [u8; 3] {
        [seq as u8, (seq >> 8) as u8, 0xab]
    }

    /// Folds `seqs` of prefix `p` in batches of the given sizes; answers every chunk's key
    /// and entry count, and the events of each window checked against the seqs themselves.
    fn fold(batches: &[usize], seqs: &[u64]) -> Vec<([u8; 9], usize)> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = redb::Database::create(file.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap();
        txn.commit().unwrap();
        let mut rest = seqs;
        let mut buffer = Vec::new();
        let mut first = true;
        for &size in batches.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(TABLE).unwrap();
                // Another prefix on both sides, so a scan must not stray into them.
                // Only the first batch may say that a prefix has no chunk yet ("o" never does).
                for prefix in [b"o", b"p", b"q"] {
                    let stored = !first || prefix == b"o";
                    append(&mut table, prefix, stored, batch.iter().map(|&s| (s, payload(s))), &mut buffer)
                        .unwrap();
                }
            }
            txn.commit().unwrap();
            first = false;
        }
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        for (lo, hi) in [(0, u64::MAX), (0, 1), (5, 6), (63, 200), (64, 65), (100, 50), (1_000, 5_000)] {
            let mut got = Vec::new();
            scan(&table, b"p", lo, hi, |seq, p: &[u8; 3]| {
                assert_eq!(*p, payload(seq));
                got.push(seq);
                Ok(true)
            })
            .unwrap();
            let want: Vec<u64> = seqs.iter().copied().filter(|s| lo <= *s && *s < hi).collect();
            assert_eq!(got, want, "window [{lo}, {hi})");
        }
        let mut first_two = Vec::new();
        scan(&table, b"p", 0, u64::MAX, |seq, _: &[u8; 3]| {
            first_two.push(seq);
            Ok(first_two.len() < 2)
        })
        .unwrap();
        assert_eq!(first_two, seqs[..2.min(seqs.len())]);
        let (first, last) = (chunk_key::<9>(b"p", 0), chunk_key::<9>(b"p", u64::MAX));
        let rows = table.range::<&[u8; 9]>(&first..=&last).unwrap().map(|row| row.unwrap());
        rows.map(|(key, value)| (*key.value(), value.value().len() / 11)).collect()
    }

    #[test]
    fn chunks_begin_where_the_events_say_whatever_the_batches() {
        let seqs: Vec<u64> = (0..300).map(|i| i * 3 + (i % 7)).collect();
        let whole = fold(&[300], &seqs);
        assert_eq!(whole.len(), 5, "300 events make chunks of 64, 64, 64, 64 and 44");
        assert_eq!(whole.iter().map(|c| c.1).collect::<Vec<_>>(), vec![64, 64, 64, 64, 44]);
        assert_eq!(whole[1].0, chunk_key::<9>(b"p", seqs[64]));
        for batches in [&[1][..], &[7], &[63, 1, 2], &[64], &[65, 200]] {
            assert_eq!(fold(batches, &seqs), whole, "batches {batches:?}");
        }
    }

    #[test]
    fn an_empty_table_scans_to_nothing() {
        assert!(fold(&[1], &[]).is_empty());
    }
}
