//! Audit indexes: redb tables derived from the log that answer the questions a security team
//! asks after a leak, without scanning the log.
//!
//! One [`AuditProjection`] maintains every table below inside the projections' write
//! transaction (so its cursor moves with its rows), and [`AuditQueries`] answers from them,
//! reading only the events it returns from the log. Everything is rebuildable from seq 0:
//! ids are interned in order of first appearance, so a rebuild is byte-for-byte equal to the
//! incremental state.
//!
//! Row layouts (all integers big-endian so keys sort numerically):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `audit_meta` | counter name (and `layout`, [`LAYOUT_VERSION`]) | u64 |
//! | `audit_key_nos` | key id (16) | key_no u32 |
//! | `audit_key_ids` | key_no u32 | key id (16) |
//! | `audit_strings` | dim (1) ‖ bytes | id u32 (from 1) |
//! | `audit_string_values` | dim (1) ‖ id (4) | bytes |
//! | `audit_key_events` | key_no (4) ‖ class (1: 0 lifecycle, 1 usage) ‖ seq of the chunk's first event (8) | a chunk of up to 64 events, each seq (8) ‖ lifecycle: kind (1) ‖ at (8) ‖ 12 zero bytes; usage: flags (1) ‖ at (8) ‖ ip id (4) ‖ ua id (4) ‖ path id (4) |
//! | `audit_key_agg` | key_no (4) ‖ dim (1) ‖ day (4) ‖ value id (4) | [`Agg`] (24) |
//! | `audit_key_first` | key_no (4) ‖ dim (1) ‖ value id (4) | first at (8) |
//! | `audit_src_agg` | ip (16) ‖ key_no (4) ‖ day (4) | [`Agg`] (24) |
//! | `audit_src_events` | ip id (4) ‖ key_no (4) ‖ seq of the chunk's first event (8) | a chunk of up to 64 uses, each seq (8) ‖ flags (1) ‖ at (8) |
//! | `audit_requests` | seq bucket (4: seq >> 16) ‖ h4(request id)\[0\] (1) ‖ seq block (1: bits 12–15) | entries of 5 bytes: h4\[1..4\] (3) ‖ seq low bits (2), in seq order |
//! | `audit_timelines` | workspace ‖ 0x00 ‖ key id (16) | postcard([`Timeline`]) |
//!
//! Dimensions: 0 = all uses (value 0), 1 = source address (interned as its 16-byte
//! IPv6/IPv4-mapped form), 2 = user agent, 3 = path. Days are UTC days since the epoch.
//! Request ids are hashed (BLAKE3, 4 bytes, domain-separated for keyledger's and the
//! gateway's ids); a hit is confirmed against the event itself.
//!
//! **Layout choices for the write path** (the projector folds every `used` event into these
//! tables, so their cost is per verification). A key's events, and its uses from one
//! address, are folded into chunks of 64 (`chunks`): a batch writes one row per key and
//! class (or address and key) it touches, plus one per full chunk, instead of inserting a
//! row per event; a key or address first seen in the batch needs no lookup of its last
//! chunk, nor of its aggregate rows. Request ids are random, so an index keyed by their hash
//! alone turns every verification into an insert at a random place of an ever-growing
//! B-tree. `audit_requests` therefore folds the ids into rows: one row per seq bucket, first
//! hash byte and block of 4,096 seqs, holding the rest of each hash and its seq. A batch
//! reads and rewrites at most 256 rows per block of 4,096 seqs it covers, instead of
//! inserting one row per id, and a lookup reads one short range per bucket and hash (about
//! 150 at 10 million events). The block bounds a row at 8,192 entries (40 KiB) even when a
//! client picks gateway request ids whose hashes share a first byte; such a client can make
//! each small batch rewrite a row of up to that size, no more. [`LAYOUT_VERSION`] names this
//! layout: a projections file written with another one has its audit tables dropped and
//! rebuilt from the log when it is opened (in [`AuditProjection`]'s `prepare`).

mod chunks;
mod projection;
mod query;
mod timeline;

pub use projection::AuditProjection;
pub use query::{
    AfterRevocation, AuditQueries, CompromiseData, KindFilter, SourceKeyStat, ValueStat, WindowTotals,
};
pub use timeline::{Change, Snapshot, Timeline};

use crate::projection::ProjectionError;
use keyledger_core::{EventKind, Timestamp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::net::IpAddr;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("audit_meta");
pub(crate) const KEY_NOS: TableDefinition<&[u8], u32> = TableDefinition::new("audit_key_nos");
pub(crate) const KEY_IDS: TableDefinition<u32, &[u8]> = TableDefinition::new("audit_key_ids");
pub(crate) const STRINGS: TableDefinition<&[u8], u32> = TableDefinition::new("audit_strings");
pub(crate) const STRING_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit_string_values");
pub(crate) const KEY_EVENTS: TableDefinition<&[u8; 13], &[u8]> = TableDefinition::new("audit_key_events");
pub(crate) const KEY_AGG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit_key_agg");
pub(crate) const KEY_FIRST: TableDefinition<&[u8], i64> = TableDefinition::new("audit_key_first");
pub(crate) const SRC_AGG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit_src_agg");
pub(crate) const SRC_EVENTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("audit_src_events");
pub(crate) const REQUESTS: TableDefinition<&[u8; 6], &[u8]> = TableDefinition::new("audit_requests");

/// The version of the table layouts above, stored in `audit_meta` under `layout`. Version 1
/// (no `layout` row) had variable-width per-event tables and `h8(request id) ‖ seq` request
/// keys; version 2 keyed `audit_src_events` by the 16-byte address instead of its interned
/// id; version 3 had one `audit_requests` row per request id (`bucket ‖ h4 ‖ seq low bits`);
/// version 4 had one `audit_key_events` row per event; version 5 one `audit_src_events` row
/// per use.
pub const LAYOUT_VERSION: u64 = 6;
pub(crate) const LAYOUT: &str = "layout";
/// Seqs per bucket of `audit_requests` (as a shift).
pub(crate) const REQUEST_BUCKET_BITS: u32 = 16;
/// Seqs per block of `audit_requests` rows (as a shift): a row holds at most two entries
/// (keyledger's id and the gateway's) per seq of its block.
pub(crate) const REQUEST_BLOCK_BITS: u32 = 12;
/// Bytes of one `audit_requests` entry.
pub(crate) const REQUEST_ENTRY: usize = 5;
pub(crate) const TIMELINES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit_timelines");

pub(crate) const CLASS_LIFECYCLE: u8 = 0;
pub(crate) const CLASS_USAGE: u8 = 1;

pub(crate) const DIM_ALL: u8 = 0;
pub(crate) const DIM_SOURCE: u8 = 1;
pub(crate) const DIM_USER_AGENT: u8 = 2;
pub(crate) const DIM_PATH: u8 = 3;

pub(crate) const FLAG_ALLOWED: u8 = 1;

pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

/// Names of every audit table (for clearing, dumping and size reports).
pub const TABLE_NAMES: [&str; 12] = [
    "audit_meta",
    "audit_key_nos",
    "audit_key_ids",
    "audit_strings",
    "audit_string_values",
    "audit_key_events",
    "audit_key_agg",
    "audit_key_first",
    "audit_src_agg",
    "audit_src_events",
    "audit_requests",
    "audit_timelines",
];

/// True if the audit tables in `txn` are absent or written with [`LAYOUT_VERSION`]; false if
/// they must be dropped ([`delete_tables`]) and rebuilt from the log. Call before
/// [`create_tables`], which fails on tables of another layout.
pub fn layout_is_current(txn: &WriteTransaction) -> Result<bool, ProjectionError> {
    let exists = txn.list_tables()?.any(|t| t.name() == META.name());
    if !exists {
        return Ok(true);
    }
    Ok(txn.open_table(META)?.get(LAYOUT)?.map(|v| v.value()) == Some(LAYOUT_VERSION))
}

/// Creates every audit table (idempotent), so readers never meet a missing one, and records
/// the layout version in a new `audit_meta`.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), ProjectionError> {
    {
        let mut meta = txn.open_table(META)?;
        if meta.get(LAYOUT)?.is_none() {
            meta.insert(LAYOUT, LAYOUT_VERSION)?;
        }
    }
    txn.open_table(KEY_NOS)?;
    txn.open_table(KEY_IDS)?;
    txn.open_table(STRINGS)?;
    txn.open_table(STRING_VALUES)?;
    txn.open_table(KEY_EVENTS)?;
    txn.open_table(KEY_AGG)?;
    txn.open_table(KEY_FIRST)?;
    txn.open_table(SRC_AGG)?;
    txn.open_table(SRC_EVENTS)?;
    txn.open_table(REQUESTS)?;
    txn.open_table(TIMELINES)?;
    Ok(())
}

/// Deletes every audit table (before a rebuild), whatever layout it was written with.
pub fn delete_tables(txn: &WriteTransaction) -> Result<(), ProjectionError> {
    for name in TABLE_NAMES {
        // Deleting goes by name only, so this also removes tables of an older layout.
        txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))?;
    }
    Ok(())
}

/// The prefix of a key's `audit_key_events` chunks of one class.
pub(crate) fn key_events_prefix(key_no: u32, class: u8) -> [u8; 5] {
    let mut prefix = [0u8; 5];
    prefix[..4].copy_from_slice(&key_no.to_be_bytes());
    prefix[4] = class;
    prefix
}

/// The seq of `key_id`'s first verification (allowed or denied) from `ip`, from the
/// `audit_src_events` index: two key lookups and the first entry of one chunk.
pub fn first_use_from(
    db: &redb::ReadTransaction,
    key_id: keyledger_core::KeyId,
    ip: IpAddr,
) -> Result<Option<u64>, ProjectionError> {
    let Some(key_no) = db.open_table(KEY_NOS)?.get(key_id.as_bytes().as_slice())?.map(|v| v.value()) else {
        return Ok(None);
    };
    let Some(ip_id) = source_id(&db.open_table(STRINGS)?, &ip_key(ip))? else {
        return Ok(None);
    };
    let mut first = None;
    chunks::scan(
        &db.open_table(SRC_EVENTS)?,
        &src_events_prefix(ip_id, key_no),
        0,
        u64::MAX,
        |seq, _: &[u8; 9]| {
            first = Some(seq);
            Ok(false)
        },
    )?;
    Ok(first)
}

/// The interned id of a 16-byte address (`audit_strings`, dimension source), if it was seen.
pub(crate) fn source_id(
    strings: &impl ReadableTable<&'static [u8], u32>,
    ip: &[u8; 16],
) -> Result<Option<u32>, ProjectionError> {
    let mut key = [0u8; 17];
    key[0] = DIM_SOURCE;
    key[1..].copy_from_slice(ip);
    Ok(strings.get(key.as_slice())?.map(|v| v.value()))
}

/// The prefix of the `audit_src_events` chunks of uses of `key_no` from address `ip_id`.
pub(crate) fn src_events_prefix(ip_id: u32, key_no: u32) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&ip_id.to_be_bytes());
    prefix[4..].copy_from_slice(&key_no.to_be_bytes());
    prefix
}

/// A table's name and its rows as bytes.
pub type TableDump = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Every row of every audit table, encoded as bytes, table by table (for tests comparing a
/// rebuild with the incremental state).
pub fn dump(db: &impl ReadableDatabase) -> Result<Vec<TableDump>, ProjectionError> {
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    macro_rules! rows {
        ($def:expr, $k:expr, $v:expr) => {{
            let table = txn.open_table($def)?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                rows.push(($k(k.value()), $v(v.value())));
            }
            out.push(($def.name().to_owned(), rows));
        }};
    }
    let bytes = |b: &[u8]| b.to_vec();
    rows!(META, |k: &str| k.as_bytes().to_vec(), |v: u64| v.to_be_bytes().to_vec());
    rows!(KEY_NOS, bytes, |v: u32| v.to_be_bytes().to_vec());
    rows!(KEY_IDS, |k: u32| k.to_be_bytes().to_vec(), bytes);
    rows!(STRINGS, bytes, |v: u32| v.to_be_bytes().to_vec());
    rows!(STRING_VALUES, bytes, bytes);
    rows!(KEY_EVENTS, |k: &[u8; 13]| k.to_vec(), bytes);
    rows!(KEY_AGG, bytes, bytes);
    rows!(KEY_FIRST, bytes, |v: i64| v.to_be_bytes().to_vec());
    rows!(SRC_AGG, bytes, bytes);
    rows!(SRC_EVENTS, |k: &[u8; 16]| k.to_vec(), bytes);
    rows!(REQUESTS, |k: &[u8; 6]| k.to_vec(), bytes);
    rows!(TIMELINES, bytes, bytes);
    Ok(out)
}

/// An address as a 16-byte key: IPv6 as is, IPv4 as its IPv4-mapped IPv6 form, so that
/// a CIDR of either family is one contiguous key range.
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address behind a 16-byte key (IPv4-mapped addresses shown as IPv4).
pub fn ip_from_key(key: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The inclusive 16-byte key range of a network `ip/prefix` (prefix counted in the
/// address's own family). `None` if the prefix is too long.
pub fn cidr_range(ip: IpAddr, prefix: u8) -> Option<([u8; 16], [u8; 16])> {
    let bits: u8 = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix > bits {
        return None;
    }
    let value = u128::from_be_bytes(ip_key(ip));
    let host_bits = u32::from(bits - prefix);
    let mask: u128 = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    Some(((value & !mask).to_be_bytes(), (value | mask).to_be_bytes()))
}

/// The UTC day of an instant, as stored in aggregate keys.
pub(crate) fn day_of(at: Timestamp) -> u32 {
    u32::try_from(at.micros().div_euclid(DAY_MICROS).max(0)).unwrap_or(u32::MAX)
}

pub(crate) fn day_start(day: u32) -> Timestamp {
    Timestamp(i64::from(day) * DAY_MICROS)
}

/// The hashed key of a keyledger request id or a gateway's request id.
pub(crate) fn request_hash(gateway: bool, id: &[u8]) -> [u8; 4] {
    let domain: &[u8] =
        if gateway { b"keyledger audit gateway request\0" } else { b"keyledger audit request\0" };
    // BLAKE3 of the domain followed by the id; a short id (every keyledger id, most gateway
    // ids) is hashed from one buffer on the stack, without an incremental hasher's state.
    let mut short = [0u8; 128];
    let hash = match short.get_mut(domain.len()..domain.len() + id.len()) {
        Some(tail) => {
            tail.copy_from_slice(id);
            short[..domain.len()].copy_from_slice(domain);
            blake3::hash(&short[..domain.len() + id.len()])
        }
        None => blake3::Hasher::new().update(domain).update(id).finalize(),
    };
    let mut out = [0u8; 4];
    out.copy_from_slice(&hash.as_bytes()[..4]);
    out
}

/// The `audit_requests` row that holds a request id hash seen at `seq`.
pub(crate) fn request_row(hash: [u8; 4], seq: u64) -> [u8; 6] {
    let bucket = u32::try_from(seq >> REQUEST_BUCKET_BITS).unwrap_or(u32::MAX);
    let mut row = [0u8; 6];
    row[..4].copy_from_slice(&bucket.to_be_bytes());
    row[4] = hash[0];
    row[5] = ((seq & 0xffff) >> REQUEST_BLOCK_BITS) as u8;
    row
}

/// The entry of a request id hash seen at `seq`, within its [`request_row`].
pub(crate) fn request_entry(hash: [u8; 4], seq: u64) -> [u8; REQUEST_ENTRY] {
    let mut entry = [0u8; REQUEST_ENTRY];
    entry[..3].copy_from_slice(&hash[1..]);
    entry[3..].copy_from_slice(&((seq & 0xffff) as u16).to_be_bytes());
    entry
}

/// The seqs of a row's entries that hold `hash`, in the row's (seq) order.
pub(crate) fn request_seqs<'r>(
    row: &[u8; 6],
    entries: &'r [u8],
    hash: [u8; 4],
) -> impl Iterator<Item = u64> + 'r {
    let bucket = u64::from(be_u32(&row[..4])) << REQUEST_BUCKET_BITS;
    entries
        .chunks_exact(REQUEST_ENTRY)
        .filter(move |entry| entry[..3] == hash[1..])
        .map(move |entry| bucket | u64::from(u16::from_be_bytes([entry[3], entry[4]])))
}

pub(crate) fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Created => 0,
        EventKind::Used => 1,
        EventKind::Denied => 2,
        EventKind::Rotated => 3,
        EventKind::Revoked => 4,
        EventKind::Expired => 5,
        EventKind::PolicySet => 6,
        EventKind::Updated => 7,
        EventKind::Disabled => 8,
        EventKind::Enabled => 9,
        EventKind::Lookup => 10,
        EventKind::Idempotency => 11,
        EventKind::WebhookSet => 12,
        EventKind::SourcesSet => 13,
        EventKind::CreditsSet => 14,
        EventKind::CreditsRefilled => 15,
        EventKind::LeakReported => 16,
        EventKind::LeakPolicySet => 17,
        EventKind::RateLimitsSet => 18,
        EventKind::KeyImported => 19,
        EventKind::KeyRehashed => 20,
    }
}

/// Uses of one key (or one address × key) within one day, or within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agg {
    pub allowed: u64,
    pub denied: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl Agg {
    pub(crate) fn one(allowed: bool, at: Timestamp) -> Self {
        Self { allowed: u64::from(allowed), denied: u64::from(!allowed), first: at, last: at }
    }

    pub fn count(&self) -> u64 {
        self.allowed + self.denied
    }

    pub(crate) fn merge(&mut self, other: &Agg) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..4].copy_from_slice(&(self.allowed.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        out[4..8].copy_from_slice(&(self.denied.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        out[8..16].copy_from_slice(&self.first.micros().to_be_bytes());
        out[16..].copy_from_slice(&self.last.micros().to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ProjectionError> {
        if bytes.len() != 24 {
            return Err(ProjectionError::Corrupt("audit aggregate".into()));
        }
        Ok(Self {
            allowed: u64::from(be_u32(&bytes[..4])),
            denied: u64::from(be_u32(&bytes[4..8])),
            first: Timestamp(be_i64(&bytes[8..16])),
            last: Timestamp(be_i64(&bytes[16..24])),
        })
    }
}

pub(crate) fn be_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

pub(crate) fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(b)
}

pub(crate) fn be_i64(bytes: &[u8]) -> i64 {
    be_u64(bytes) as i64
}

/// A row key of at most 8 bytes as the big-endian number it spells: keys of one length
/// sort as their numbers do, so a sort compares numbers instead of calling `memcmp`.
pub(crate) fn key_number<const N: usize>(key: &[u8; N]) -> u64 {
    const { assert!(N <= 8) };
    let mut bytes = [0u8; 8];
    bytes[8 - N..].copy_from_slice(key);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_rows_and_entries_give_back_their_seq_and_sort_by_bucket_first() {
        let hashes = [[0u8; 4], [0xff; 4], request_hash(true, b"gw-1"), request_hash(false, b"gw-1")];
        let seqs = [0, 1, 0xfff, 0x1000, 0xfffe, 0xffff, 0x1_0000, 0x1_0001, 0x1234_5678, (1 << 48) - 1];
        for hash in hashes {
            for seq in seqs {
                let row = request_row(hash, seq);
                let entry = request_entry(hash, seq);
                assert_eq!(request_seqs(&row, &entry, hash).collect::<Vec<_>>(), vec![seq], "seq {seq:#x}");
                let mut other = hash;
                other[3] ^= 1;
                assert_eq!(request_seqs(&row, &entry, other).count(), 0, "another hash, seq {seq:#x}");
            }
        }
        // Every row of a bucket sorts before every row of the next one, so a batch's writes
        // stay within the last bucket; a row holds one block of 4,096 seqs.
        assert!(request_row([0xff; 4], 0xffff) < request_row([0; 4], 0x1_0000));
        assert_eq!(request_row([1; 4], 0x1000), request_row([1; 4], 0x1fff));
        assert_ne!(request_row([1; 4], 0xfff), request_row([1; 4], 0x1000));
        assert_ne!(request_hash(true, b"req_x"), request_hash(false, b"req_x"));
    }

    #[test]
    fn keys_sort_as_their_numbers_do() {
        let keys: Vec<[u8; 5]> = (0..600u32)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761);
                [(x >> 24) as u8, (x >> 16) as u8 & 3, 0, (x >> 8) as u8, (i % 3) as u8]
            })
            .collect();
        for a in &keys {
            for b in keys.iter().step_by(7) {
                assert_eq!(key_number(a).cmp(&key_number(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
        assert_eq!(key_number(&[0xff; 8]), u64::MAX);
    }

    /// The stored rows are keyed by these hashes: whichever way an id is hashed (from one
    /// buffer on the stack or incrementally, for a long one), it is BLAKE3 of the domain
    /// and the id, so indexes written before stay readable.
    #[test]
    fn a_request_hash_is_blake3_of_its_domain_and_id_whatever_the_length() {
        let id: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for (gateway, domain) in
            [(true, &b"keyledger audit gateway request\0"[..]), (false, &b"keyledger audit request\0"[..])]
        {
            for len in [0, 1, 16, 26, 64, 96, 103, 104, 105, 127, 128, 129, 400] {
                let whole = [domain, &id[..len]].concat();
                let expected = blake3::hash(&whole);
                assert_eq!(request_hash(gateway, &id[..len]), expected.as_bytes()[..4], "length {len}");
            }
        }
    }
}
