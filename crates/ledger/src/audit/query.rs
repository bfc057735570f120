//! Audit queries, answered from the audit tables (and the log's time index), never by
//! scanning the log. Each query reads one redb snapshot and bounds itself by the audit
//! projection's cursor in that snapshot, so aggregates and event rows always agree.

use super::projection::timeline_key;
use super::*;
use crate::state::{KeyRecord, KeyStatus};
use keyledger_core::{Event, KeyId, Payload, RequestId, WorkspaceId};
use keyledger_log::LogReader;
use redb::{ReadOnlyTable, ReadTransaction};
use std::collections::{BTreeMap, BTreeSet};

const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("projection_cursors");

/// Which of a key's events to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindFilter {
    Lifecycle,
    Usage,
    All,
}

/// Uses of a key in a window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub allowed: u64,
    pub denied: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

/// One value (address, user agent, path) seen with a key in a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueStat {
    pub value: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub allowed: u64,
    pub denied: u64,
    /// Never seen with this key before the window's start.
    pub new_since: bool,
}

/// Attempts (allowed or not) after the key's revocation or expiry instant, in the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AfterRevocation {
    /// The instant: the revocation's or the (current) expiry's, whichever came first.
    pub since: Option<Timestamp>,
    pub count: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub sources: Vec<ValueStat>,
}

/// The leak report's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompromiseData {
    pub lifecycle: Vec<Event>,
    pub uses: WindowTotals,
    pub sources: Vec<ValueStat>,
    pub user_agents: Vec<ValueStat>,
    pub paths: Vec<ValueStat>,
    pub after_revocation: AfterRevocation,
}

/// One key used from an address (or network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceKeyStat {
    pub key_id: KeyId,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    pub allowed: u64,
    pub denied: u64,
}

/// A seq window split into whole UTC days (answered from aggregates) and edge seq ranges
/// (answered from event rows).
struct Split {
    full: Option<(u32, u32)>,
    /// Days that may hold edge events.
    edge_days: (u32, u32),
    edges: Vec<(u64, u64)>,
}

type DimAggs = [BTreeMap<u32, Agg>; 4];

/// Read access to the audit indexes.
pub struct AuditQueries<'a> {
    db: &'a crate::projection::ProjectionsDb,
    log: &'a LogReader,
}

fn log_error(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Log(e.to_string())
}

impl<'a> AuditQueries<'a> {
    pub fn new(db: &'a crate::projection::ProjectionsDb, log: &'a LogReader) -> Self {
        Self { db, log }
    }

    fn snapshot(&self) -> Result<(ReadTransaction, u64), ProjectionError> {
        let txn = self.db.get()?.begin_read()?;
        let cursor = txn.open_table(CURSORS)?.get("audit")?.map_or(0, |v| v.value());
        Ok((txn, cursor.min(self.log.len())))
    }

    /// First seq at or after `at`, within `[0, end]`.
    fn seq_at(&self, at: Timestamp, end: u64) -> Result<u64, ProjectionError> {
        Ok(self.log.seq_at_or_after(at).map_err(log_error)?.min(end))
    }

    fn bounds(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        end: u64,
    ) -> Result<(u64, u64), ProjectionError> {
        let lo = match from {
            Some(t) => self.seq_at(t, end)?,
            None => 0,
        };
        let hi = match to {
            Some(t) => self.seq_at(t, end)?,
            None => end,
        };
        Ok((lo, hi.max(lo)))
    }

    fn event(&self, seq: u64) -> Result<Event, ProjectionError> {
        self.log.event(seq).map_err(log_error)
    }

    fn split(&self, lo: u64, hi: u64, end: u64) -> Result<Split, ProjectionError> {
        if lo >= hi {
            return Ok(Split { full: None, edge_days: (1, 0), edges: Vec::new() });
        }
        let d_lo = day_of(self.event(lo)?.at);
        let d_hi = day_of(self.event(hi - 1)?.at);
        let start = |d: u32| self.seq_at(day_start(d), end);
        let first_full = if start(d_lo)? == lo { d_lo } else { d_lo.saturating_add(1) };
        let last_full =
            if d_hi == u32::MAX || start(d_hi + 1)? == hi { Some(d_hi) } else { d_hi.checked_sub(1) };
        match last_full {
            Some(last_full) if first_full <= last_full => {
                let a = start(first_full)?;
                let b = if last_full == u32::MAX { hi } else { start(last_full + 1)? };
                let edges = [(lo, a), (b, hi)].into_iter().filter(|(x, y)| x < y).collect();
                Ok(Split { full: Some((first_full, last_full)), edge_days: (d_lo, d_hi), edges })
            }
            _ => Ok(Split { full: None, edge_days: (d_lo, d_hi), edges: vec![(lo, hi)] }),
        }
    }

    fn key_no(txn: &ReadTransaction, key_id: &KeyId) -> Result<Option<u32>, ProjectionError> {
        Ok(txn.open_table(KEY_NOS)?.get(key_id.as_bytes().as_slice())?.map(|v| v.value()))
    }

    /// Per dimension, value id → uses of `key_no` in seq window `[lo, hi)`.
    fn key_window(
        &self,
        txn: &ReadTransaction,
        key_no: u32,
        lo: u64,
        hi: u64,
        end: u64,
        dims: &[u8],
    ) -> Result<DimAggs, ProjectionError> {
        let mut out: DimAggs = Default::default();
        let split = self.split(lo, hi, end)?;
        if let Some((first, last)) = split.full {
            let table = txn.open_table(KEY_AGG)?;
            for &dim in dims {
                let mut from = [0u8; 13];
                from[..4].copy_from_slice(&key_no.to_be_bytes());
                from[4] = dim;
                from[5..9].copy_from_slice(&first.to_be_bytes());
                let mut to = [0xffu8; 13];
                to[..4].copy_from_slice(&key_no.to_be_bytes());
                to[4] = dim;
                to[5..9].copy_from_slice(&last.to_be_bytes());
                for row in table.range(from.as_slice()..=to.as_slice())? {
                    let (k, v) = row?;
                    let id = be_u32(&k.value()[9..13]);
                    let agg = Agg::decode(v.value())?;
                    out[usize::from(dim)].entry(id).and_modify(|a| a.merge(&agg)).or_insert(agg);
                }
            }
        }
        let events = txn.open_table(KEY_EVENTS)?;
        let prefix = key_events_prefix(key_no, CLASS_USAGE);
        for (a, b) in split.edges {
            chunks::scan(&events, &prefix, a, b, |_, v: &[u8; 21]| {
                let one = Agg::one(v[0] & FLAG_ALLOWED != 0, Timestamp(be_i64(&v[1..9])));
                let ids = [0, be_u32(&v[9..13]), be_u32(&v[13..17]), be_u32(&v[17..21])];
                for &dim in dims {
                    let id = ids[usize::from(dim)];
                    if dim != DIM_ALL && id == 0 {
                        continue;
                    }
                    out[usize::from(dim)].entry(id).and_modify(|a| a.merge(&one)).or_insert(one);
                }
                Ok(true)
            })?;
        }
        Ok(out)
    }

    fn value_text(
        table: &ReadOnlyTable<&'static [u8], &'static [u8]>,
        dim: u8,
        id: u32,
    ) -> Result<String, ProjectionError> {
        let mut key = [0u8; 5];
        key[0] = dim;
        key[1..].copy_from_slice(&id.to_be_bytes());
        let bytes =
            table.get(key.as_slice())?.ok_or_else(|| ProjectionError::Corrupt("interned value".into()))?;
        let bytes = bytes.value();
        if dim == DIM_SOURCE {
            let mut ip = [0u8; 16];
            if bytes.len() != 16 {
                return Err(ProjectionError::Corrupt("interned address".into()));
            }
            ip.copy_from_slice(bytes);
            Ok(ip_from_key(ip).to_string())
        } else {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
    }

    /// Turns one dimension's aggregates into sorted value stats (most used first).
    fn stats(
        &self,
        txn: &ReadTransaction,
        key_no: u32,
        dim: u8,
        aggs: &BTreeMap<u32, Agg>,
        since: Option<Timestamp>,
    ) -> Result<Vec<ValueStat>, ProjectionError> {
        let values = txn.open_table(STRING_VALUES)?;
        let firsts = txn.open_table(KEY_FIRST)?;
        let mut out = Vec::with_capacity(aggs.len());
        for (&id, agg) in aggs {
            let new_since = match since {
                None => true,
                Some(since) => {
                    let mut key = [0u8; 9];
                    key[..4].copy_from_slice(&key_no.to_be_bytes());
                    key[4] = dim;
                    key[5..].copy_from_slice(&id.to_be_bytes());
                    firsts.get(key.as_slice())?.is_none_or(|first| first.value() >= since.micros())
                }
            };
            out.push(ValueStat {
                value: Self::value_text(&values, dim, id)?,
                first_seen: agg.first,
                last_seen: agg.last,
                count: agg.count(),
                allowed: agg.allowed,
                denied: agg.denied,
                new_since,
            });
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        Ok(out)
    }

    /// A key's events, oldest first, from seq `cursor` on, within `[from, to)`; at most
    /// `limit`, and the seq to continue from if there are more.
    pub fn key_events(
        &self,
        key_id: &KeyId,
        filter: KindFilter,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<u64>), ProjectionError> {
        let (txn, end) = self.snapshot()?;
        let Some(key_no) = Self::key_no(&txn, key_id)? else { return Ok((Vec::new(), None)) };
        let (lo, hi) = self.bounds(from, to, end)?;
        let lo = lo.max(cursor.unwrap_or(0));
        if lo >= hi {
            return Ok((Vec::new(), None));
        }
        let table = txn.open_table(KEY_EVENTS)?;
        let classes: &[u8] = match filter {
            KindFilter::Lifecycle => &[CLASS_LIFECYCLE],
            KindFilter::Usage => &[CLASS_USAGE],
            KindFilter::All => &[CLASS_LIFECYCLE, CLASS_USAGE],
        };
        // Merge the classes' seq-ordered ranges, taking limit + 1 seqs.
        let mut seqs: Vec<u64> = Vec::with_capacity(limit + 1);
        for &class in classes {
            let mut taken = 0;
            chunks::scan(&table, &key_events_prefix(key_no, class), lo, hi, |seq, _: &[u8; 21]| {
                seqs.push(seq);
                taken += 1;
                Ok(taken <= limit)
            })?;
        }
        seqs.sort_unstable();
        seqs.truncate(limit + 1);
        let next = if seqs.len() > limit { seqs.pop() } else { None };
        let events = seqs.into_iter().map(|seq| self.event(seq)).collect::<Result<_, _>>()?;
        Ok((events, next))
    }

    /// The leak report for `key` over `[since, until)` (both optional: the key's whole life).
    pub fn compromise(
        &self,
        key: &KeyRecord,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<CompromiseData, ProjectionError> {
        let (txn, end) = self.snapshot()?;
        let mut data = CompromiseData {
            lifecycle: Vec::new(),
            uses: WindowTotals::default(),
            sources: Vec::new(),
            user_agents: Vec::new(),
            paths: Vec::new(),
            after_revocation: AfterRevocation::default(),
        };
        let Some(key_no) = Self::key_no(&txn, &key.key_id)? else { return Ok(data) };
        // Lifecycle (whole life) and the revocation's seq.
        let mut revoked_seq = None;
        {
            let table = txn.open_table(KEY_EVENTS)?;
            let prefix = key_events_prefix(key_no, CLASS_LIFECYCLE);
            chunks::scan(&table, &prefix, 0, end, |seq, v: &[u8; 21]| {
                if revoked_seq.is_none() && v[0] == kind_code(keyledger_core::EventKind::Revoked) {
                    revoked_seq = Some(seq);
                }
                data.lifecycle.push(self.event(seq)?);
                Ok(true)
            })?;
        }
        let (lo, hi) = self.bounds(since, until, end)?;
        let all =
            self.key_window(&txn, key_no, lo, hi, end, &[DIM_ALL, DIM_SOURCE, DIM_USER_AGENT, DIM_PATH])?;
        if let Some(total) = all[usize::from(DIM_ALL)].get(&0) {
            data.uses = WindowTotals {
                allowed: total.allowed,
                denied: total.denied,
                first: Some(total.first),
                last: Some(total.last),
            };
        }
        data.sources = self.stats(&txn, key_no, DIM_SOURCE, &all[usize::from(DIM_SOURCE)], since)?;
        data.user_agents =
            self.stats(&txn, key_no, DIM_USER_AGENT, &all[usize::from(DIM_USER_AGENT)], since)?;
        data.paths = self.stats(&txn, key_no, DIM_PATH, &all[usize::from(DIM_PATH)], since)?;

        // After revocation or expiry.
        let expiry_seq = match key.expires_at {
            Some(at) => Some(self.seq_at(at, end)?),
            None => None,
        };
        let cutoff = match (revoked_seq, expiry_seq) {
            (Some(r), Some(e)) => Some(r.min(e)),
            (r, e) => r.or(e),
        };
        if let Some(cutoff) = cutoff {
            let instant = match (key.revoked_at, key.expires_at) {
                (Some(r), Some(e)) => Some(r.min(e)),
                (r, e) => r.or(e),
            };
            data.after_revocation.since = instant;
            let after = self.key_window(&txn, key_no, lo.max(cutoff), hi, end, &[DIM_ALL, DIM_SOURCE])?;
            if let Some(total) = after[usize::from(DIM_ALL)].get(&0) {
                data.after_revocation.count = total.count();
                data.after_revocation.first = Some(total.first);
                data.after_revocation.last = Some(total.last);
            }
            data.after_revocation.sources =
                self.stats(&txn, key_no, DIM_SOURCE, &after[usize::from(DIM_SOURCE)], since)?;
        }
        Ok(data)
    }

    /// The events of a request id: keyledger's own (`req_…`) or a gateway's
    /// `context.request_id`, in seq order.
    pub fn request_events(&self, id: &str) -> Result<Vec<Event>, ProjectionError> {
        let (txn, end) = self.snapshot()?;
        let table = txn.open_table(REQUESTS)?;
        let own: Option<RequestId> = id.parse().ok();
        let mut candidates = vec![(request_hash(true, id.as_bytes()), false)];
        if let Some(own) = &own {
            candidates.push((request_hash(false, own.as_bytes()), true));
        }
        let mut found = BTreeMap::new();
        let buckets = end.div_ceil(1 << REQUEST_BUCKET_BITS);
        for (hash, is_own) in candidates {
            for bucket in 0..buckets {
                let first = bucket << REQUEST_BUCKET_BITS;
                let (from, to) = (request_row(hash, first), request_row(hash, first | 0xffff));
                let mut seqs = Vec::new();
                for row in table.range::<&[u8; 6]>(&from..=&to)? {
                    let (k, v) = row?;
                    seqs.extend(request_seqs(k.value(), v.value(), hash));
                }
                for seq in seqs {
                    if seq >= end || found.contains_key(&seq) {
                        continue;
                    }
                    let event = self.event(seq)?;
                    let matches = if is_own {
                        Some(event.request_id) == own
                    } else {
                        match &event.payload {
                            payload if let Some(u) = payload.usage() => {
                                u.context.request_id.as_deref() == Some(id)
                            }
                            Payload::Denied(d) => d.context.request_id.as_deref() == Some(id),
                            _ => false,
                        }
                    };
                    if matches {
                        found.insert(seq, event);
                    }
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// Keys used from addresses in the inclusive 16-byte range `[low, high]` within
    /// `[from, to)`, most used first.
    pub fn sources(
        &self,
        low: [u8; 16],
        high: [u8; 16],
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<SourceKeyStat>, ProjectionError> {
        let (txn, end) = self.snapshot()?;
        let (lo, hi) = self.bounds(from, to, end)?;
        let split = self.split(lo, hi, end)?;
        if split.edges.is_empty() && split.full.is_none() {
            return Ok(Vec::new());
        }
        let mut per_key: BTreeMap<u32, Agg> = BTreeMap::new();
        let mut edge_pairs: BTreeSet<[u8; 20]> = BTreeSet::new();
        let aggs = txn.open_table(SRC_AGG)?;
        let mut from_key = [0u8; 24];
        from_key[..16].copy_from_slice(&low);
        let mut to_key = [0xffu8; 24];
        to_key[..16].copy_from_slice(&high);
        for row in aggs.range(from_key.as_slice()..=to_key.as_slice())? {
            let (k, v) = row?;
            let k = k.value();
            let day = be_u32(&k[20..24]);
            if split.full.is_some_and(|(f, l)| f <= day && day <= l) {
                let agg = Agg::decode(v.value())?;
                per_key.entry(be_u32(&k[16..20])).and_modify(|a| a.merge(&agg)).or_insert(agg);
            } else if split.edge_days.0 <= day && day <= split.edge_days.1 {
                let mut pair = [0u8; 20];
                pair.copy_from_slice(&k[..20]);
                edge_pairs.insert(pair);
            }
        }
        let events = txn.open_table(SRC_EVENTS)?;
        let strings = txn.open_table(STRINGS)?;
        let mut ip_ids: BTreeMap<[u8; 16], u32> = BTreeMap::new();
        for pair in &edge_pairs {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&pair[..16]);
            let ip_id = match ip_ids.get(&ip) {
                Some(id) => *id,
                None => {
                    let id = source_id(&strings, &ip)?.ok_or_else(|| {
                        ProjectionError::Corrupt("an aggregated address is not interned".into())
                    })?;
                    ip_ids.insert(ip, id);
                    id
                }
            };
            let key_no = be_u32(&pair[16..20]);
            let prefix = src_events_prefix(ip_id, key_no);
            for &(a, b) in &split.edges {
                chunks::scan(&events, &prefix, a, b, |_, v: &[u8; 9]| {
                    let one = Agg::one(v[0] & FLAG_ALLOWED != 0, Timestamp(be_i64(&v[1..9])));
                    per_key.entry(key_no).and_modify(|a| a.merge(&one)).or_insert(one);
                    Ok(true)
                })?;
            }
        }
        let ids = txn.open_table(KEY_IDS)?;
        let mut out = Vec::with_capacity(per_key.len());
        for (key_no, agg) in per_key {
            let row = ids.get(key_no)?.ok_or_else(|| ProjectionError::Corrupt("key number".into()))?;
            let bytes: [u8; 16] =
                row.value().try_into().map_err(|_| ProjectionError::Corrupt("key id row".into()))?;
            out.push(SourceKeyStat {
                key_id: KeyId::from_bytes(bytes),
                first_seen: agg.first,
                last_seen: agg.last,
                count: agg.count(),
                allowed: agg.allowed,
                denied: agg.denied,
            });
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key_id.cmp(&b.key_id)));
        Ok(out)
    }

    /// A workspace's keys that were active (valid) at `at`, with their fields as of then,
    /// oldest first.
    pub fn active_at(
        &self,
        workspace: &WorkspaceId,
        at: Timestamp,
    ) -> Result<Vec<(Timeline, Snapshot)>, ProjectionError> {
        let (txn, _) = self.snapshot()?;
        let table = txn.open_table(TIMELINES)?;
        let mut from = workspace.as_str().as_bytes().to_vec();
        from.push(0);
        let mut to = workspace.as_str().as_bytes().to_vec();
        to.push(1);
        let mut out = Vec::new();
        for row in table.range(from.as_slice()..to.as_slice())? {
            let (_, v) = row?;
            let timeline: Timeline = postcard::from_bytes(v.value())
                .map_err(|e| ProjectionError::Corrupt(format!("timeline: {e}")))?;
            if let Some(snapshot) = timeline.at(at)
                && snapshot.status(at) == KeyStatus::Active
            {
                out.push((timeline, snapshot));
            }
        }
        out.sort_by_key(|(t, _)| t.key_id);
        Ok(out)
    }

    /// A key's validity timeline (`None` for a key the index does not know).
    pub fn timeline(
        &self,
        workspace: &WorkspaceId,
        key_id: &KeyId,
    ) -> Result<Option<Timeline>, ProjectionError> {
        let (txn, _) = self.snapshot()?;
        let table = txn.open_table(TIMELINES)?;
        let Some(row) = table.get(timeline_key(workspace.as_str(), key_id).as_slice())? else {
            return Ok(None);
        };
        postcard::from_bytes(row.value())
            .map(Some)
            .map_err(|e| ProjectionError::Corrupt(format!("timeline: {e}")))
    }
}
