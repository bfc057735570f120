//! The projection that maintains the audit tables (see the module docs for the layouts).

use super::*;
use crate::projection::{Prepared, Projection};
use keyledger_core::{Event, KeyId, Payload, UsageContext};
use redb::Table;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// Maintains every audit table.
pub struct AuditProjection;

impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit"
    }

    /// Creates the audit tables; a file written with another [`LAYOUT_VERSION`] has them
    /// dropped first, and the catch-up rebuilds them from the log (the other projections
    /// keep their rows and cursors).
    fn prepare(&mut self, txn: &WriteTransaction) -> Result<Prepared, ProjectionError> {
        let prepared = if layout_is_current(txn)? {
            Prepared::Current
        } else {
            tracing::warn!("the audit indexes have an older layout; rebuilding them from the log");
            delete_tables(txn)?;
            Prepared::Reset
        };
        create_tables(txn)?;
        Ok(prepared)
    }

    fn apply(&mut self, txn: &WriteTransaction, batches: &[&[Event]]) -> Result<(), ProjectionError> {
        let mut writer = Writer::open(txn, batches.iter().map(|b| b.len()).sum())?;
        for event in batches.iter().flat_map(|b| b.iter()) {
            writer.event(event)?;
        }
        writer.flush()
    }

    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError> {
        delete_tables(txn)?;
        create_tables(txn)
    }
}

const NEXT_KEY_NO: &str = "next_key_no";
const NEXT_STRING: [&str; 4] =
    ["next_string_0", "next_string_source", "next_string_user_agent", "next_string_path"];

fn corrupt(what: &str) -> ProjectionError {
    ProjectionError::Corrupt(what.to_owned())
}

/// One batch's writes. Aggregates are summed in memory and merged with the stored rows once
/// at the end; the per-event rows are collected too and inserted in key order at the end, so
/// that consecutive inserts land in the same (already copied) leaf pages instead of random
/// ones.
struct Writer<'t> {
    meta: Table<'t, &'static str, u64>,
    key_nos: Table<'t, &'static [u8], u32>,
    key_ids: Table<'t, u32, &'static [u8]>,
    strings: Table<'t, &'static [u8], u32>,
    string_values: Table<'t, &'static [u8], &'static [u8]>,
    key_agg: Table<'t, &'static [u8], &'static [u8]>,
    key_first: Table<'t, &'static [u8], i64>,
    src_agg: Table<'t, &'static [u8], &'static [u8]>,
    timelines: Table<'t, &'static [u8], &'static [u8]>,
    txn: &'t WriteTransaction,
    next_key_no: u32,
    next_string: [u32; 4],
    /// The first key number and interned ids given out in this batch: no stored row names
    /// one of these (rows are written only at the batch's end), so their rows need no lookup.
    fresh: Fresh,
    key_cache: HashMap<KeyId, u32>,
    /// Per dimension: value bytes → interned id.
    string_cache: [HashMap<Vec<u8>, u32>; 4],
    /// `audit_key_events` entries: prefix (key_no ‖ class), seq, payload.
    key_events: Vec<([u8; 5], u64, [u8; 21])>,
    /// `audit_src_events` entries: prefix (ip id ‖ key_no), seq, payload.
    src_events: Vec<([u8; 8], u64, [u8; 9])>,
    /// `audit_requests` rows and the entries to append to them, in seq order.
    requests: Vec<([u8; 6], [u8; REQUEST_ENTRY])>,
    /// The batch's uses summed by [`UseGroup`], in order of each group's first use: the
    /// aggregate rows are made from these at the end (a use costs one map update here
    /// instead of one per aggregate row it counts in).
    use_groups: HashMap<UseGroup, usize>,
    use_sums: Vec<UseSum>,
    timeline_delta: BTreeMap<Vec<u8>, Timeline>,
}

/// Uses of one key on one day with one source address, user agent and path (ids as interned;
/// 0 for none): each aggregate row a use counts in (`audit_key_agg`, `audit_key_first`,
/// `audit_src_agg`) is a function of these.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct UseGroup {
    key_no: u32,
    day: u32,
    ip: Option<[u8; 16]>,
    ip_id: u32,
    ua_id: u32,
    path_id: u32,
}

/// A [`UseGroup`]'s uses in the batch: their sum, and when the first of them (in seq order)
/// happened, which `audit_key_first` keeps.
struct UseSum {
    group: UseGroup,
    agg: Agg,
    first_at: i64,
}

/// The first key number and the first interned id of each dimension given out in a batch.
struct Fresh {
    key_no: u32,
    string: [u32; 4],
}

impl Fresh {
    fn key(&self, key_no: u32) -> bool {
        key_no >= self.key_no
    }

    /// Whether the `dim` value `id` (0: none, or the all-uses dimension) was first seen in
    /// this batch.
    fn value(&self, dim: u8, id: u32) -> bool {
        id != 0 && id >= self.string[usize::from(dim & 3)]
    }
}

pub(crate) fn timeline_key(workspace: &str, key_id: &KeyId) -> Vec<u8> {
    let mut key = Vec::with_capacity(workspace.len() + 17);
    key.extend_from_slice(workspace.as_bytes());
    key.push(0);
    key.extend_from_slice(key_id.as_bytes());
    key
}

impl<'t> Writer<'t> {
    /// A writer for a batch of `events` events (its per-event rows are gathered in vectors
    /// of that size, so that they are not copied as they grow).
    fn open(txn: &'t WriteTransaction, events: usize) -> Result<Self, ProjectionError> {
        let meta = txn.open_table(META)?;
        let next_key_no = meta.get(NEXT_KEY_NO)?.map_or(1, |v| v.value()) as u32;
        let mut next_string = [1u32; 4];
        for (dim, name) in NEXT_STRING.iter().enumerate() {
            next_string[dim] = meta.get(*name)?.map_or(1, |v| v.value()) as u32;
        }
        Ok(Self {
            meta,
            key_nos: txn.open_table(KEY_NOS)?,
            key_ids: txn.open_table(KEY_IDS)?,
            strings: txn.open_table(STRINGS)?,
            string_values: txn.open_table(STRING_VALUES)?,
            key_agg: txn.open_table(KEY_AGG)?,
            key_first: txn.open_table(KEY_FIRST)?,
            src_agg: txn.open_table(SRC_AGG)?,
            timelines: txn.open_table(TIMELINES)?,
            txn,
            next_key_no,
            next_string,
            fresh: Fresh { key_no: next_key_no, string: next_string },
            key_cache: HashMap::new(),
            string_cache: Default::default(),
            key_events: Vec::with_capacity(events),
            src_events: Vec::with_capacity(events),
            requests: Vec::with_capacity(2 * events),
            use_groups: HashMap::new(),
            use_sums: Vec::new(),
            timeline_delta: BTreeMap::new(),
        })
    }

    fn key_no(&mut self, key_id: KeyId) -> Result<u32, ProjectionError> {
        if let Some(no) = self.key_cache.get(&key_id) {
            return Ok(*no);
        }
        let existing = self.key_nos.get(key_id.as_bytes().as_slice())?.map(|v| v.value());
        let no = match existing {
            Some(no) => no,
            None => {
                let no = self.next_key_no;
                self.next_key_no = no.checked_add(1).ok_or_else(|| corrupt("key numbers exhausted"))?;
                self.key_nos.insert(key_id.as_bytes().as_slice(), no)?;
                self.key_ids.insert(no, key_id.as_bytes().as_slice())?;
                no
            }
        };
        self.key_cache.insert(key_id, no);
        Ok(no)
    }

    fn intern(&mut self, dim: u8, bytes: &[u8]) -> Result<u32, ProjectionError> {
        if let Some(id) = self.string_cache[usize::from(dim)].get(bytes) {
            return Ok(*id);
        }
        let mut key = Vec::with_capacity(bytes.len() + 1);
        key.push(dim);
        key.extend_from_slice(bytes);
        let existing = self.strings.get(key.as_slice())?.map(|v| v.value());
        let id = match existing {
            Some(id) => id,
            None => {
                let slot = &mut self.next_string[usize::from(dim)];
                let id = *slot;
                *slot = id.checked_add(1).ok_or_else(|| corrupt("string ids exhausted"))?;
                self.strings.insert(key.as_slice(), id)?;
                let mut reverse = [0u8; 5];
                reverse[0] = dim;
                reverse[1..].copy_from_slice(&id.to_be_bytes());
                self.string_values.insert(reverse.as_slice(), bytes)?;
                id
            }
        };
        self.string_cache[usize::from(dim)].insert(bytes.to_vec(), id);
        Ok(id)
    }

    fn index_request(&mut self, gateway: bool, id: &[u8], seq: u64) {
        let hash = request_hash(gateway, id);
        self.requests.push((request_row(hash, seq), request_entry(hash, seq)));
    }

    fn event(&mut self, event: &Event) -> Result<(), ProjectionError> {
        self.index_request(false, event.request_id.as_bytes(), event.seq);
        match &event.payload {
            payload if let Some(u) = payload.usage() => self.usage(event, u.key_id, true, &u.context),
            Payload::Denied(d) => self.usage(event, d.key_id, false, &d.context),
            payload => {
                let Some(key_id) = payload.key_id() else { return Ok(()) };
                let key_no = self.key_no(key_id)?;
                let mut value = [0u8; 21];
                value[0] = kind_code(payload.kind());
                value[1..9].copy_from_slice(&event.at.micros().to_be_bytes());
                self.key_events.push((key_events_prefix(key_no, CLASS_LIFECYCLE), event.seq, value));
                self.timeline(event, key_id)
            }
        }
    }

    fn timeline(&mut self, event: &Event, key_id: KeyId) -> Result<(), ProjectionError> {
        let key = timeline_key(event.payload.workspace().as_str(), &key_id);
        if let Some(created) = Timeline::from_created(event) {
            self.timeline_delta.insert(key, created);
            return Ok(());
        }
        if !self.timeline_delta.contains_key(&key) {
            let Some(row) = self.timelines.get(key.as_slice())? else { return Ok(()) };
            let timeline: Timeline =
                postcard::from_bytes(row.value()).map_err(|e| corrupt(&format!("timeline: {e}")))?;
            drop(row);
            self.timeline_delta.insert(key.clone(), timeline);
        }
        if let Some(timeline) = self.timeline_delta.get_mut(&key) {
            timeline.record(event);
        }
        Ok(())
    }

    fn usage(
        &mut self,
        event: &Event,
        key_id: KeyId,
        allowed: bool,
        context: &UsageContext,
    ) -> Result<(), ProjectionError> {
        let key_no = self.key_no(key_id)?;
        let ip = context.ip.map(ip_key);
        let ip_id = match &ip {
            Some(ip) => self.intern(DIM_SOURCE, ip)?,
            None => 0,
        };
        let ua_id = match &context.user_agent {
            Some(ua) => self.intern(DIM_USER_AGENT, ua.as_bytes())?,
            None => 0,
        };
        let path_id = match &context.path {
            Some(path) => self.intern(DIM_PATH, path.as_bytes())?,
            None => 0,
        };
        let flags = if allowed { FLAG_ALLOWED } else { 0 };
        let at = event.at;
        let mut value = [0u8; 21];
        value[0] = flags;
        value[1..9].copy_from_slice(&at.micros().to_be_bytes());
        value[9..13].copy_from_slice(&ip_id.to_be_bytes());
        value[13..17].copy_from_slice(&ua_id.to_be_bytes());
        value[17..21].copy_from_slice(&path_id.to_be_bytes());
        self.key_events.push((key_events_prefix(key_no, CLASS_USAGE), event.seq, value));

        let group = UseGroup { key_no, day: day_of(at), ip, ip_id, ua_id, path_id };
        let one = Agg::one(allowed, at);
        match self.use_groups.entry(group) {
            Entry::Occupied(slot) => self.use_sums[*slot.get()].agg.merge(&one),
            Entry::Vacant(slot) => {
                slot.insert(self.use_sums.len());
                self.use_sums.push(UseSum { group, agg: one, first_at: at.micros() });
            }
        }
        if ip.is_some() {
            let mut src_value = [0u8; 9];
            src_value.copy_from_slice(&value[..9]);
            self.src_events.push((src_events_prefix(ip_id, key_no), event.seq, src_value));
        }
        if let Some(request) = &context.request_id {
            self.index_request(true, request.as_bytes(), event.seq);
        }
        Ok(())
    }

    fn flush(mut self) -> Result<(), ProjectionError> {
        let fresh = &self.fresh;
        let mut buffer = Vec::new();
        let mut key_events = self.txn.open_table(KEY_EVENTS)?;
        let stored = |prefix: &[u8; 5]| !fresh.key(be_u32(&prefix[..4]));
        chunks::append_all(&mut key_events, &mut self.key_events, stored, &mut buffer)?;
        drop(key_events);
        let mut src_events = self.txn.open_table(SRC_EVENTS)?;
        let stored = |prefix: &[u8; 8]| {
            !fresh.value(DIM_SOURCE, be_u32(&prefix[..4])) && !fresh.key(be_u32(&prefix[4..]))
        };
        chunks::append_all(&mut src_events, &mut self.src_events, stored, &mut buffer)?;
        drop(src_events);
        // A stable sort: each row's new entries stay in seq order, after its stored ones, so
        // the rows do not depend on where batches began (a rebuild writes the same bytes).
        self.requests.sort_by_key(|(row, _)| key_number(row));
        let mut requests = self.txn.open_table(REQUESTS)?;
        for group in self.requests.chunk_by(|a, b| a.0 == b.0) {
            let row = &group[0].0;
            buffer.clear();
            if let Some(stored) = requests.get(row)? {
                buffer.extend_from_slice(stored.value());
            }
            for (_, entry) in group {
                buffer.extend_from_slice(entry);
            }
            requests.insert(row, buffer.as_slice())?;
        }
        drop(requests);
        let AggregateRows { key_agg: key_agg_delta, key_first: key_first_delta, src_agg: src_agg_delta } =
            aggregate_rows(&self.use_sums);
        // Rows of a key or value first seen in this batch cannot be stored yet.
        for (key, mut agg) in key_agg_delta {
            let stored = !fresh.key(be_u32(&key[..4])) && !fresh.value(key[4], be_u32(&key[9..]));
            debug_assert!(
                stored || self.key_agg.get(key.as_slice())?.is_none(),
                "a new key_agg row is stored"
            );
            if stored && let Some(old) = self.key_agg.get(key.as_slice())? {
                agg.merge(&Agg::decode(old.value())?);
            }
            self.key_agg.insert(key.as_slice(), agg.encode().as_slice())?;
        }
        for (key, mut agg) in src_agg_delta {
            let source = self.string_cache[usize::from(DIM_SOURCE)].get(&key[..16]).copied();
            let stored =
                !fresh.key(be_u32(&key[16..20])) && !source.is_some_and(|id| fresh.value(DIM_SOURCE, id));
            debug_assert!(
                stored || self.src_agg.get(key.as_slice())?.is_none(),
                "a new src_agg row is stored"
            );
            if stored && let Some(old) = self.src_agg.get(key.as_slice())? {
                agg.merge(&Agg::decode(old.value())?);
            }
            self.src_agg.insert(key.as_slice(), agg.encode().as_slice())?;
        }
        for (key, first) in key_first_delta {
            let stored = !fresh.key(be_u32(&key[..4])) && !fresh.value(key[4], be_u32(&key[5..]));
            debug_assert!(
                stored || self.key_first.get(key.as_slice())?.is_none(),
                "a new key_first row is stored"
            );
            if !stored || self.key_first.get(key.as_slice())?.is_none() {
                self.key_first.insert(key.as_slice(), first)?;
            }
        }
        for (key, timeline) in std::mem::take(&mut self.timeline_delta) {
            let bytes = postcard::to_allocvec(&timeline).map_err(|e| corrupt(&format!("timeline: {e}")))?;
            self.timelines.insert(key.as_slice(), bytes.as_slice())?;
        }
        self.meta.insert(NEXT_KEY_NO, u64::from(self.next_key_no))?;
        for (dim, name) in NEXT_STRING.iter().enumerate() {
            self.meta.insert(*name, u64::from(self.next_string[dim]))?;
        }
        Ok(())
    }
}

/// The aggregate rows a batch's uses add to, keyed as stored, in key order.
#[derive(Default)]
struct AggregateRows {
    /// `audit_key_agg`: key_no ‖ dim ‖ day ‖ value id.
    key_agg: BTreeMap<[u8; 13], Agg>,
    /// `audit_key_first`: key_no ‖ dim ‖ value id.
    key_first: BTreeMap<[u8; 9], i64>,
    /// `audit_src_agg`: ip ‖ key_no ‖ day.
    src_agg: BTreeMap<[u8; 24], Agg>,
}

/// The [`AggregateRows`] summed from a batch's [`UseSum`]s. Going through the sums in order
/// of their first use keeps, for each `audit_key_first` row, the time of the batch's first
/// use it counts.
fn aggregate_rows(sums: &[UseSum]) -> AggregateRows {
    let mut rows = AggregateRows::default();
    let AggregateRows { key_agg, key_first, src_agg } = &mut rows;
    for UseSum { group, agg, first_at } in sums {
        let UseGroup { key_no, day, ip, ip_id, ua_id, path_id } = *group;
        for (dim, id) in [(DIM_ALL, 0), (DIM_SOURCE, ip_id), (DIM_USER_AGENT, ua_id), (DIM_PATH, path_id)] {
            if dim != DIM_ALL && id == 0 {
                continue;
            }
            let mut agg_key = [0u8; 13];
            agg_key[..4].copy_from_slice(&key_no.to_be_bytes());
            agg_key[4] = dim;
            agg_key[5..9].copy_from_slice(&day.to_be_bytes());
            agg_key[9..].copy_from_slice(&id.to_be_bytes());
            key_agg.entry(agg_key).and_modify(|a: &mut Agg| a.merge(agg)).or_insert(*agg);
            let mut first_key = [0u8; 9];
            first_key[..4].copy_from_slice(&key_no.to_be_bytes());
            first_key[4] = dim;
            first_key[5..].copy_from_slice(&id.to_be_bytes());
            key_first.entry(first_key).or_insert(*first_at);
        }
        if let Some(ip) = ip {
            let mut agg_key = [0u8; 24];
            agg_key[..16].copy_from_slice(&ip);
            agg_key[16..20].copy_from_slice(&key_no.to_be_bytes());
            agg_key[20..].copy_from_slice(&day.to_be_bytes());
            src_agg.entry(agg_key).and_modify(|a: &mut Agg| a.merge(agg)).or_insert(*agg);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(group: UseGroup, allowed: bool, at: i64) -> UseSum {
        UseSum { group, agg: Agg::one(allowed, Timestamp(at)), first_at: at }
    }

    /// Summing by group must give the rows that adding each use to each row gives: counts and
    /// time ranges merged, and for `audit_key_first` the time of the first use in seq order,
    /// even when a later use carries an earlier time.
    #[test]
    fn aggregate_rows_sum_the_groups_and_keep_the_first_use_in_seq_order() {
        let ip = Some([7u8; 16]);
        let a = UseGroup { key_no: 3, day: 20_000, ip, ip_id: 1, ua_id: 2, path_id: 5 };
        let b = UseGroup { path_id: 6, ..a };
        let mut first = sum(a, true, 100);
        first.agg.merge(&Agg::one(false, Timestamp(300)));
        let AggregateRows { key_agg, key_first, src_agg } = aggregate_rows(&[first, sum(b, true, 50)]);

        let agg_key = |dim: u8, id: u32| {
            let mut key = [0u8; 13];
            key[..4].copy_from_slice(&3u32.to_be_bytes());
            key[4] = dim;
            key[5..9].copy_from_slice(&20_000u32.to_be_bytes());
            key[9..].copy_from_slice(&id.to_be_bytes());
            key
        };
        let all = key_agg[&agg_key(DIM_ALL, 0)];
        assert_eq!((all.allowed, all.denied, all.first, all.last), (2, 1, Timestamp(50), Timestamp(300)));
        assert_eq!(key_agg[&agg_key(DIM_USER_AGENT, 2)], all);
        let path_5 = key_agg[&agg_key(DIM_PATH, 5)];
        assert_eq!((path_5.allowed, path_5.denied, path_5.first), (1, 1, Timestamp(100)));
        assert_eq!(key_agg[&agg_key(DIM_PATH, 6)].count(), 1);
        assert_eq!(key_agg.len(), 5, "all uses, one address, one user agent, two paths");

        let first_key = |dim: u8, id: u32| {
            let mut key = [0u8; 9];
            key[..4].copy_from_slice(&3u32.to_be_bytes());
            key[4] = dim;
            key[5..].copy_from_slice(&id.to_be_bytes());
            key
        };
        assert_eq!(
            key_first[&first_key(DIM_ALL, 0)],
            100,
            "the first use in seq order, not the earliest time"
        );
        assert_eq!(key_first[&first_key(DIM_SOURCE, 1)], 100);
        assert_eq!(key_first[&first_key(DIM_PATH, 6)], 50);

        assert_eq!(src_agg.len(), 1);
        assert_eq!(src_agg.values().next().map(Agg::count), Some(3));
    }

    #[test]
    fn a_use_without_address_user_agent_or_path_counts_only_for_all_uses() {
        let bare = UseGroup { key_no: 1, day: 1, ip: None, ip_id: 0, ua_id: 0, path_id: 0 };
        let AggregateRows { key_agg, key_first, src_agg } = aggregate_rows(&[sum(bare, false, 10)]);
        assert_eq!(key_agg.len(), 1);
        assert_eq!(key_first.len(), 1);
        assert!(src_agg.is_empty());
    }
}
