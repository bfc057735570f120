//! Audit indexes against brute-force scans of the log.
//!
//! A generator writes a synthetic, multi-day history (keys created, used from a pool of
//! addresses, user agents and paths, denied, rotated, revoked, disabled, re-dated) straight
//! into an initialised data dir's log; the engine then indexes it on open. Every audit query
//! is compared with a scan of `engine.log().events_from(0)`, and a rebuild of the
//! projections into a fresh file must equal the incremental state byte for byte.

use keyledger_core::{
    Actor, Created, Denial, DenyReason, Disabled, Environment, Event, KeyId, KeyRef, Payload, RequestId,
    Revoked, Rotated, Secret, Timestamp, Updated, Usage, UsageContext, WorkspaceId, encode_event,
};
use keyledger_ledger::audit::{self, KindFilter, ValueStat};
use keyledger_ledger::engine::projection_list;
use keyledger_ledger::projection::Projections;
use keyledger_ledger::state::decide;
use keyledger_ledger::{Caller, Engine, EngineOptions, KeyStatus, LedgerState, VerifyRequirements};
use keyledger_log::segment::{SegmentLog, SegmentOptions};
use keyledger_log::storage::OsStorage;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

mod support;

use support::{init, ws};

const DAY: i64 = 86_400_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const IPS: &[&str] = &[
    "203.0.113.1",
    "203.0.113.2",
    "203.0.113.200",
    "198.51.100.7",
    "2001:db8::1",
    "2001:db8::2:1",
    "10.0.0.1",
];
const AGENTS: &[&str] = &["curl/8", "python-requests/2.31", "Go-http-client/1.1", "evil-bot/0.1"];
const PATHS: &[&str] = &["/v1/orders", "/v1/users", "/admin", "/v1/orders/42"];

struct Generator {
    rng: Rng,
    state: LedgerState,
    events: Vec<Event>,
    next_seq: u64,
    at: Timestamp,
    pepper: keyledger_core::Pepper,
    admin: KeyId,
    secrets: Vec<(KeyId, Secret)>,
}

impl Generator {
    fn push(&mut self, actor: Actor, request_id: RequestId, payload: Payload) {
        let event = Event { seq: self.next_seq, at: self.at, actor, request_id, payload };
        self.next_seq += 1;
        self.state.apply(&event);
        self.events.push(event);
    }

    fn rid(&mut self) -> RequestId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next().to_be_bytes());
        bytes[8..].copy_from_slice(&self.rng.next().to_be_bytes());
        bytes[0] &= 0x7f;
        RequestId::from_bytes(bytes)
    }

    fn random_key(&mut self) -> Option<KeyId> {
        let keys: Vec<KeyId> = self
            .state
            .keys()
            .filter(|k| !k.workspace().is_ledger())
            .map(|k| k.key_id())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (!keys.is_empty()).then(|| *self.rng.pick(&keys))
    }

    fn create(
        &mut self,
        rotated_from: Option<KeyId>,
        workspace: WorkspaceId,
        expires_at: Option<Timestamp>,
        rid: RequestId,
    ) -> KeyId {
        let secret =
            Secret::generate(&keyledger_core::KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.rng.next().to_be_bytes());
        id[8..].copy_from_slice(&self.rng.next().to_be_bytes());
        id[0] &= 0x7f;
        let key_id = KeyId::from_bytes(id);
        let payload = Payload::Created(Created {
            key_id,
            workspace,
            name: format!("key {}", self.next_seq),
            hash: self.pepper.hash(secret.expose()),
            hint: secret.hint(),
            prefix: keyledger_core::KeyPrefix::default_prefix(),
            environment: Environment::Live,
            scopes: vec!["read".into(), "write".into()],
            resources: vec![],
            owner: None,
            metadata: "{}".into(),
            expires_at,
            rotated_from,
        });
        self.push(Actor::Admin(self.admin), rid, payload);
        self.secrets.push((key_id, secret));
        key_id
    }

    fn step(&mut self, gateway_ids: &mut Vec<String>) {
        // Time moves on: usually a little, sometimes not at all, sometimes days.
        self.at = match self.rng.below(100) {
            0..=9 => self.at,
            10..=94 => self.at.plus_micros(self.rng.below(20 * 60_000_000) as i64),
            _ => self.at.plus_micros(self.rng.below(2 * DAY as u64) as i64),
        };
        let admin = Actor::Admin(self.admin);
        let roll = self.rng.below(100);
        let key = match self.random_key() {
            Some(key) if roll >= 8 => key,
            _ => {
                let workspace = ws(self.rng.pick::<&str>(&["acme", "beta"]));
                let expires_at = (self.rng.below(2) == 0)
                    .then(|| self.at.plus_micros(self.rng.below(5 * DAY as u64) as i64 + 1));
                let rid = self.rid();
                self.create(None, workspace, expires_at, rid);
                return;
            }
        };
        let record = self.state.key(&key).unwrap();
        let workspace = record.workspace.clone();
        match roll {
            8..=10 if record.revoked_at.is_none() => {
                let rid = self.rid();
                self.push(
                    admin,
                    rid,
                    Payload::Revoked(Revoked { key_id: key, workspace, reason: Some("leak".into()) }),
                );
            }
            11..=13 if record.revoked_at.is_none() => {
                let rid = self.rid();
                let lifetime = record
                    .expires_at
                    .map(|e| self.at.plus_micros((e.micros() - record.created_at.micros()).max(1)));
                let new = self.create(Some(key), workspace.clone(), lifetime, rid);
                let overlap = self.rng.below(2) == 0;
                let valid_until = overlap.then(|| self.at.plus_micros(self.rng.below(DAY as u64) as i64 + 1));
                self.push(
                    admin.clone(),
                    rid,
                    Payload::Rotated(Rotated {
                        key_id: key,
                        workspace: workspace.clone(),
                        rotated_to: new,
                        valid_until,
                    }),
                );
                if !overlap {
                    self.push(
                        admin,
                        rid,
                        Payload::Revoked(Revoked { key_id: key, workspace, reason: Some("rotated".into()) }),
                    );
                }
            }
            14..=15 if record.revoked_at.is_none() => {
                let rid = self.rid();
                let payload = if record.disabled.is_some() {
                    Payload::Enabled(KeyRef { key_id: key, workspace })
                } else {
                    Payload::Disabled(Disabled { key_id: key, workspace, reason: None })
                };
                self.push(admin, rid, payload);
            }
            16..=17 if record.revoked_at.is_none() => {
                let rid = self.rid();
                let expires_at = (self.rng.below(3) != 0)
                    .then(|| self.at.plus_micros(self.rng.below(4 * DAY as u64) as i64 + 1));
                let payload = Payload::Updated(Updated {
                    key_id: key,
                    workspace,
                    name: Some(format!("renamed {}", self.next_seq)),
                    owner: None,
                    metadata: None,
                    expires_at: Some(expires_at),
                    scopes: (self.rng.below(2) == 0).then(|| vec!["read".into()]),
                    resources: None,
                });
                self.push(admin, rid, payload);
            }
            _ => {
                let rid = self.rid();
                let request_id = match self.rng.below(4) {
                    0 => None,
                    1 if !gateway_ids.is_empty() => Some(self.rng.pick(gateway_ids).clone()),
                    _ => {
                        let id = format!("gw-{}", self.next_seq);
                        gateway_ids.push(id.clone());
                        Some(id)
                    }
                };
                let context = UsageContext {
                    ip: (self.rng.below(8) != 0).then(|| self.rng.pick(IPS).parse().unwrap()),
                    user_agent: (self.rng.below(6) != 0).then(|| self.rng.pick(AGENTS).to_string()),
                    method: Some("GET".into()),
                    path: (self.rng.below(6) != 0).then(|| self.rng.pick(PATHS).to_string()),
                    request_id,
                    scopes: vec![],
                    resource: None,
                };
                let wants = VerifyRequirements {
                    scopes: if self.rng.below(10) == 0 { vec!["admin".into()] } else { vec!["read".into()] },
                    ..Default::default()
                };
                let outcome = decide(&self.state.view(&key).unwrap(), &wants, self.at);
                if outcome == Err(keyledger_core::DenyReason::Expired) && !record.expiry_recorded {
                    self.push(
                        Actor::System,
                        rid,
                        Payload::Expired(KeyRef { key_id: key, workspace: workspace.clone() }),
                    );
                }
                let payload = match outcome {
                    Ok(()) => Payload::Used(Usage { key_id: key, workspace, context }),
                    Err(reason) => Payload::Denied(Denial { key_id: key, workspace, reason, context }),
                };
                self.push(Actor::Verifier, rid, payload);
            }
        }
    }
}

/// Initialises `dir` and appends `steps` synthetic steps to its log. Returns the secrets.
fn build(dir: &Path, seed: u64, steps: usize) -> Vec<(KeyId, Secret)> {
    let init = init(dir);
    let secrets = keyledger_ledger::datadir::load(dir).unwrap();
    let events_dir = dir.join(keyledger_ledger::datadir::LOG_DIR).join("events");
    let (mut segments, _) =
        SegmentLog::open(OsStorage::shared(), &events_dir, SegmentOptions::default()).unwrap();
    let reader = segments.reader();
    let mut state = LedgerState::default();
    let mut last_at = Timestamp(0);
    for seq in 0..reader.len() {
        let event = keyledger_core::decode_event(&reader.read(seq).unwrap()).unwrap();
        last_at = event.at;
        state.apply(&event);
    }
    let mut generator = Generator {
        rng: Rng(seed | 1),
        next_seq: reader.len(),
        state,
        events: Vec::new(),
        at: last_at.plus_micros(1),
        pepper: secrets.pepper,
        admin: init.admin_key_id,
        secrets: Vec::new(),
    };
    let mut gateway_ids = Vec::new();
    for _ in 0..steps {
        generator.step(&mut gateway_ids);
    }
    for chunk in generator.events.chunks(500) {
        let bytes: Vec<Vec<u8>> = chunk.iter().map(encode_event).collect();
        let records: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
        segments.append_batch(&records).unwrap();
    }
    segments.sync().unwrap();
    segments.close().unwrap();
    generator.secrets
}

fn all_events(engine: &Engine) -> Vec<Event> {
    engine.log().events_from(0).map(|e| e.unwrap()).collect()
}

fn usage_parts(event: &Event) -> Option<(KeyId, bool, &UsageContext)> {
    match &event.payload {
        Payload::Used(u) => Some((u.key_id, true, &u.context)),
        Payload::Denied(d) => Some((d.key_id, false, &d.context)),
        _ => None,
    }
}

fn in_window(at: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t)
}

/// Value → (first, last, count, allowed, denied), brute force.
type Brute = BTreeMap<String, (Timestamp, Timestamp, u64, u64, u64)>;

fn add(map: &mut Brute, value: String, at: Timestamp, allowed: bool) {
    let entry = map.entry(value).or_insert((at, at, 0, 0, 0));
    entry.0 = entry.0.min(at);
    entry.1 = entry.1.max(at);
    entry.2 += 1;
    if allowed { entry.3 += 1 } else { entry.4 += 1 }
}

fn as_brute(stats: &[ValueStat]) -> Brute {
    stats
        .iter()
        .map(|s| (s.value.clone(), (s.first_seen, s.last_seen, s.count, s.allowed, s.denied)))
        .collect()
}

fn check_compromise(
    engine: &Engine,
    events: &[Event],
    key_id: KeyId,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) {
    let key = engine.key(&key_id).unwrap();
    let report = engine.audit().compromise(&key, since, until).unwrap();
    let label = format!("{key_id} since {since:?} until {until:?}");
    // Lifecycle: every non-usage event of the key.
    let lifecycle: Vec<u64> = events
        .iter()
        .filter(|e| e.payload.key_id() == Some(key_id) && !e.payload.kind().is_usage())
        .map(|e| e.seq)
        .collect();
    assert_eq!(report.lifecycle.iter().map(|e| e.seq).collect::<Vec<_>>(), lifecycle, "{label}");
    let (mut sources, mut agents, mut paths) = (Brute::new(), Brute::new(), Brute::new());
    let (mut allowed, mut denied, mut first, mut last) = (0, 0, None::<Timestamp>, None::<Timestamp>);
    let mut seen_before: BTreeSet<(u8, String)> = BTreeSet::new();
    let revoked_seq = events
        .iter()
        .find(|e| matches!(&e.payload, Payload::Revoked(r) if r.key_id == key_id))
        .map(|e| e.seq);
    let expiry_seq =
        key.expires_at.map(|x| events.iter().find(|e| e.at >= x).map_or(events.len() as u64, |e| e.seq));
    let cutoff = match (revoked_seq, expiry_seq) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (mut after_count, mut after_sources) = (0u64, Brute::new());
    let (mut after_first, mut after_last) = (None::<Timestamp>, None::<Timestamp>);
    for event in events {
        let Some((k, ok, context)) = usage_parts(event) else { continue };
        if k != key_id {
            continue;
        }
        if since.is_some_and(|s| event.at < s) {
            if let Some(ip) = context.ip {
                seen_before.insert((1, ip.to_string()));
            }
            if let Some(ua) = &context.user_agent {
                seen_before.insert((2, ua.clone()));
            }
            if let Some(path) = &context.path {
                seen_before.insert((3, path.clone()));
            }
        }
        if !in_window(event.at, since, until) {
            continue;
        }
        if ok {
            allowed += 1
        } else {
            denied += 1
        }
        first = Some(first.map_or(event.at, |f| f.min(event.at)));
        last = Some(last.map_or(event.at, |l| l.max(event.at)));
        if let Some(ip) = context.ip {
            add(&mut sources, ip.to_string(), event.at, ok);
        }
        if let Some(ua) = &context.user_agent {
            add(&mut agents, ua.clone(), event.at, ok);
        }
        if let Some(path) = &context.path {
            add(&mut paths, path.clone(), event.at, ok);
        }
        if cutoff.is_some_and(|c| event.seq >= c) {
            after_count += 1;
            after_first = Some(after_first.map_or(event.at, |f| f.min(event.at)));
            after_last = Some(after_last.map_or(event.at, |l| l.max(event.at)));
            if let Some(ip) = context.ip {
                add(&mut after_sources, ip.to_string(), event.at, ok);
            }
        }
    }
    assert_eq!(
        (report.uses.allowed, report.uses.denied, report.uses.first, report.uses.last),
        (allowed, denied, first, last),
        "{label}"
    );
    assert_eq!(as_brute(&report.sources), sources, "sources {label}");
    assert_eq!(as_brute(&report.user_agents), agents, "agents {label}");
    assert_eq!(as_brute(&report.paths), paths, "paths {label}");
    for (dim, stats) in [(1u8, &report.sources), (2, &report.user_agents), (3, &report.paths)] {
        for s in stats.iter() {
            assert_eq!(
                s.new_since,
                !seen_before.contains(&(dim, s.value.clone())),
                "new_since {} {label}",
                s.value
            );
        }
        // Most used first.
        assert!(stats.windows(2).all(|w| w[0].count >= w[1].count), "{label}");
    }
    let after = &report.after_revocation;
    assert_eq!(
        (after.count, after.first, after.last),
        (after_count, after_first, after_last),
        "after {label}"
    );
    assert_eq!(as_brute(&after.sources), after_sources, "after sources {label}");
}

fn check_key_events(
    engine: &Engine,
    events: &[Event],
    key_id: KeyId,
    filter: KindFilter,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: usize,
) {
    let expected: Vec<u64> = events
        .iter()
        .filter(|e| e.payload.key_id() == Some(key_id) && in_window(e.at, from, to))
        .filter(|e| match filter {
            KindFilter::All => true,
            KindFilter::Usage => e.payload.kind().is_usage(),
            KindFilter::Lifecycle => !e.payload.kind().is_usage(),
        })
        .map(|e| e.seq)
        .collect();
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = engine.audit().key_events(&key_id, filter, from, to, cursor, limit).unwrap();
        assert!(page.len() <= limit);
        got.extend(page.iter().map(|e| e.seq));
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(got, expected, "{key_id} {filter:?} {from:?} {to:?} limit {limit}");
}

fn check_sources(
    engine: &Engine,
    events: &[Event],
    net: &str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) {
    let (ip, prefix) = match net.split_once('/') {
        Some((ip, p)) => (ip.parse::<IpAddr>().unwrap(), p.parse::<u8>().unwrap()),
        None => {
            let ip: IpAddr = net.parse().unwrap();
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let (low, high) = audit::cidr_range(ip, prefix).unwrap();
    let got = engine.audit().sources(low, high, from, to).unwrap();
    let mut expected: BTreeMap<KeyId, Brute> = BTreeMap::new();
    for event in events {
        let Some((k, ok, context)) = usage_parts(event) else { continue };
        let Some(addr) = context.ip else { continue };
        let key = audit::ip_key(addr);
        if key >= low && key <= high && in_window(event.at, from, to) {
            add(expected.entry(k).or_default(), String::new(), event.at, ok);
        }
    }
    let got: BTreeMap<KeyId, Brute> = got
        .iter()
        .map(|s| {
            (
                s.key_id,
                [(String::new(), (s.first_seen, s.last_seen, s.count, s.allowed, s.denied))]
                    .into_iter()
                    .collect(),
            )
        })
        .collect();
    assert_eq!(got, expected, "sources {net} {from:?} {to:?}");
}

fn check_active_at(engine: &Engine, events: &[Event], workspace: &WorkspaceId, at: Timestamp) {
    let mut replay = LedgerState::default();
    for event in events.iter().take_while(|e| e.at <= at) {
        replay.apply(event);
    }
    type Row = (KeyId, Option<Timestamp>, String, Vec<String>, Option<KeyId>);
    let expected: Vec<Row> = replay
        .workspace_keys(workspace)
        .filter(|k| k.status(at) == KeyStatus::Active)
        .map(|k| k.record())
        .map(|k| (k.key_id, k.expires_at, k.name, k.scopes, k.rotated_to))
        .collect();
    let got: Vec<_> = engine
        .audit()
        .active_at(workspace, at)
        .unwrap()
        .into_iter()
        .map(|(t, s)| (t.key_id, s.expires_at, s.name, s.scopes, s.rotated_to))
        .collect();
    assert_eq!(got, expected, "active_at {workspace} {at:?}");
}

fn instants(rng: &mut Rng, events: &[Event], n: usize) -> Vec<Option<Timestamp>> {
    let first = events[0].at.micros();
    let last = events[events.len() - 1].at.micros();
    let mut out = vec![None];
    for _ in 0..n {
        out.push(Some(match rng.below(4) {
            0 => events[rng.below(events.len() as u64) as usize].at,
            1 => Timestamp((first + rng.below((last - first) as u64 + 1) as i64).div_euclid(DAY) * DAY + DAY),
            2 => events[rng.below(events.len() as u64) as usize].at.plus_micros(1),
            _ => Timestamp(first + rng.below((last - first) as u64 + 1) as i64),
        }));
    }
    out
}

fn run_scenario(seed: u64, steps: usize) {
    let dir = support::DataDir::new();
    let secrets = build(&dir, seed, steps);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    runtime.block_on(engine.wait_for_projections(Duration::from_secs(10)));
    let events = all_events(&engine);
    let span_days = (events.last().unwrap().at.micros() - events[0].at.micros()) / DAY;
    assert!(span_days >= 3, "the scenario should span days, spans {span_days}");
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let keys: Vec<KeyId> = secrets.iter().map(|(k, _)| *k).collect();
    let times = instants(&mut rng, &events, 12);

    // Compromise reports: whole life and random windows, for every key.
    for key in &keys {
        check_compromise(&engine, &events, *key, None, None);
    }
    for _ in 0..60 {
        let key = *rng.pick(&keys);
        let a = *rng.pick(&times);
        let b = *rng.pick(&times);
        let (since, until) = match (a, b) {
            (Some(x), Some(y)) if x > y => (Some(y), Some(x)),
            other => other,
        };
        check_compromise(&engine, &events, key, since, until);
    }
    // Windows starting exactly at a value's first sighting (new_since's boundary).
    for event in events.iter().filter(|e| usage_parts(e).is_some_and(|(_, _, c)| c.ip.is_some())).step_by(97)
    {
        let (key, _, _) = usage_parts(event).unwrap();
        check_compromise(&engine, &events, key, Some(event.at), None);
        check_compromise(
            &engine,
            &events,
            key,
            Some(event.at.plus_micros(1)),
            Some(event.at.plus_micros(DAY)),
        );
    }
    // Events by key, with filters and pagination.
    for _ in 0..40 {
        let key = *rng.pick(&keys);
        let filter = *rng.pick(&[KindFilter::All, KindFilter::Lifecycle, KindFilter::Usage]);
        let from = *rng.pick(&times);
        let to = *rng.pick(&times);
        let limit = *rng.pick(&[1usize, 3, 7, 100]);
        check_key_events(&engine, &events, key, filter, from, to, limit);
    }
    // Sources: single addresses and networks of both families.
    for net in [
        "203.0.113.0/24",
        "203.0.113.2",
        "198.51.100.0/22",
        "2001:db8::/32",
        "2001:db8::2:1",
        "0.0.0.0/0",
        "::/0",
        "192.0.2.1",
        "203.0.113.128/25",
    ] {
        check_sources(&engine, &events, net, None, None);
        for _ in 0..4 {
            let from = *rng.pick(&times);
            let to = *rng.pick(&times);
            check_sources(&engine, &events, net, from, to);
        }
    }
    // Requests: keyledger's ids and gateways'.
    let mut by_own: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_gateway: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        by_own.entry(event.request_id.to_string()).or_default().push(event.seq);
        if let Some((_, _, context)) = usage_parts(event)
            && let Some(id) = &context.request_id
        {
            by_gateway.entry(id.clone()).or_default().push(event.seq);
        }
    }
    for (id, seqs) in by_own.iter().step_by(7).chain(by_gateway.iter().step_by(3)) {
        let got: Vec<u64> = engine.audit().request_events(id).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(&got, seqs, "request {id}");
    }
    assert!(by_gateway.values().any(|s| s.len() > 1), "some gateway id should repeat");
    assert!(engine.audit().request_events("gw-nope").unwrap().is_empty());
    assert!(engine.audit().request_events("req_00000000000000000000000000").unwrap().is_empty());
    // Active at: both workspaces, many instants (incl. exact event times).
    for at in times.iter().flatten() {
        for workspace in [ws("acme"), ws("beta"), WorkspaceId::ledger()] {
            check_active_at(&engine, &events, &workspace, *at);
        }
    }
    // Rebuild into a fresh file equals the incremental state.
    let fresh = dir.with_file_name("fresh.redb");
    let mut rebuilt = Projections::open(&fresh, projection_list()).unwrap();
    rebuilt.rebuild(engine.log()).unwrap();
    let live = audit::dump(engine.projections_db().get().unwrap().as_ref()).unwrap();
    let again = audit::dump(rebuilt.database().get().unwrap().as_ref()).unwrap();
    assert_same_tables(&live, &again, "rebuild");
    drop(rebuilt);
    // So does folding the log in many batches of random sizes: keys and addresses first
    // seen in one batch and used in later ones, chunks and request rows filled up across
    // batches, aggregates merged with stored rows.
    let batched = dir.with_file_name("batched.redb");
    let mut folded = Projections::open(&batched, projection_list()).unwrap();
    let mut start = 0;
    while start < events.len() {
        let end = (start + 1 + rng.below(150) as usize).min(events.len());
        folded.apply(&events[start..end]).unwrap();
        start = end;
    }
    let again = audit::dump(folded.database().get().unwrap().as_ref()).unwrap();
    assert_same_tables(&live, &again, "folding in batches");
    drop(folded);
    runtime.block_on(engine.shutdown());
}

/// The audit projection sums a batch's uses before writing its aggregate rows; whatever the
/// batches, the rows must be those of adding the uses one by one: counts and time ranges
/// merged, and each `audit_key_first` row keeping its first use in seq order even when a
/// later use carries an earlier time (a clock stepped back, several days in one batch).
#[test]
fn uses_folded_in_any_batches_give_the_rows_of_one_use_at_a_time() {
    let mut rng = Rng(0x5eed_f00d);
    let keys: Vec<KeyId> = (1..=5u8).map(|i| KeyId::from_bytes([i; 16])).collect();
    let base = Timestamp::now().micros();
    let events: Vec<Event> = (0..600u64)
        .map(|seq| {
            let context = UsageContext {
                ip: (rng.below(5) > 0).then(|| rng.pick(IPS).parse().unwrap()),
                user_agent: (rng.below(4) > 0).then(|| rng.pick(AGENTS).to_string()),
                method: Some("GET".into()),
                path: (rng.below(4) > 0).then(|| rng.pick(PATHS).to_string()),
                request_id: (rng.below(2) > 0).then(|| format!("gw-{}", rng.below(40))),
                scopes: vec![],
                resource: None,
            };
            // Times wander back and forth over three days.
            let at = Timestamp(base + rng.below(3 * DAY as u64) as i64 - DAY);
            let key_id = *rng.pick(&keys);
            let payload = if rng.below(3) == 0 {
                Payload::Denied(Denial {
                    key_id,
                    workspace: ws("acme"),
                    reason: DenyReason::Expired,
                    context,
                })
            } else {
                Payload::Used(Usage { key_id, workspace: ws("acme"), context })
            };
            Event { seq, at, actor: Actor::Verifier, request_id: RequestId::generate(seq), payload }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let fold = |name: &str, sizes: &mut dyn FnMut() -> usize| {
        let mut projections = Projections::open(&dir.path().join(name), projection_list()).unwrap();
        let mut start = 0;
        while start < events.len() {
            let end = (start + sizes()).min(events.len());
            projections.apply(&events[start..end]).unwrap();
            start = end;
        }
        audit::dump(projections.database().get().unwrap().as_ref()).unwrap()
    };
    let one_at_a_time = fold("one.redb", &mut || 1);
    let first = one_at_a_time.iter().find(|(name, _)| name == "audit_key_first").map(|(_, rows)| rows.len());
    assert!(first.is_some_and(|rows| rows > 10), "first uses recorded: {first:?}");
    assert_same_tables(&one_at_a_time, &fold("all.redb", &mut || usize::MAX), "one batch");
    let mut sizes = Rng(7);
    assert_same_tables(
        &one_at_a_time,
        &fold("random.redb", &mut || 1 + sizes.below(90) as usize),
        "random batches",
    );
}

fn assert_same_tables(expected: &[audit::TableDump], got: &[audit::TableDump], how: &str) {
    assert_eq!(expected.len(), got.len());
    for ((name, rows), (name2, rows2)) in expected.iter().zip(got) {
        assert_eq!(name, name2);
        assert_eq!(rows.len(), rows2.len(), "table {name} after {how}");
        assert!(rows == rows2, "table {name} differs after {how}");
    }
}

#[test]
fn audit_queries_equal_brute_force_seed_1() {
    run_scenario(0x5eed_0001, 2500);
}

#[test]
fn audit_queries_equal_brute_force_seed_2() {
    run_scenario(0xdead_beef_1234, 1500);
}

#[test]
fn audit_queries_equal_brute_force_seed_3() {
    run_scenario(0x0123_4567_89ab, 800);
}

#[test]
fn cidr_ranges_are_contiguous_and_family_aware() {
    let (lo, hi) = audit::cidr_range("203.0.113.77".parse().unwrap(), 24).unwrap();
    assert_eq!(audit::ip_from_key(lo).to_string(), "203.0.113.0");
    assert_eq!(audit::ip_from_key(hi).to_string(), "203.0.113.255");
    let inside = audit::ip_key("203.0.113.9".parse().unwrap());
    let outside = audit::ip_key("203.0.114.0".parse().unwrap());
    assert!(lo <= inside && inside <= hi && outside > hi);
    let v6 = audit::ip_key("2001:db8::1".parse().unwrap());
    assert!(!(lo <= v6 && v6 <= hi));
    let (lo, hi) = audit::cidr_range("2001:db8::".parse().unwrap(), 32).unwrap();
    assert!(lo <= v6 && v6 <= hi);
    assert!(audit::cidr_range("1.2.3.4".parse().unwrap(), 33).is_none());
    let (lo, hi) = audit::cidr_range("0.0.0.0".parse().unwrap(), 0).unwrap();
    assert!(lo <= inside && inside <= hi && !(lo <= v6 && v6 <= hi));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_recorded_without_the_candidate_and_seen_by_queries() {
    let (_dir, init, engine) = support::ledger();
    let admin = engine.authenticate_admin(init.admin_key.expose()).await.unwrap();
    let caller = || Caller {
        actor: Actor::Admin(admin.key_id),
        request_id: RequestId::generate(Timestamp::now().millis()),
    };
    let spec = keyledger_ledger::KeySpec {
        name: "leaky".into(),
        scopes: vec!["read".into()],
        resources: vec![],
        environment: Environment::Live,
        owner: None,
        metadata: "{}".into(),
        expiry: keyledger_ledger::Expiry::Never,
        credits: None,
    };
    let (key, secret) = engine.create(caller(), ws("acme"), spec).await.unwrap();
    let context = UsageContext {
        ip: Some("203.0.113.5".parse().unwrap()),
        request_id: Some("gw-77".into()),
        ..Default::default()
    };
    engine
        .verify(
            RequestId::generate(Timestamp::now().millis()),
            secret.expose(),
            VerifyRequirements::default(),
            context.clone(),
        )
        .await
        .unwrap();
    engine.revoke(caller(), key.key_id, Some("leaked".into())).await.unwrap();
    engine
        .verify(
            RequestId::generate(Timestamp::now().millis()),
            secret.expose(),
            VerifyRequirements::default(),
            context,
        )
        .await
        .unwrap();

    let found = engine.find_by_secret(secret.expose()).unwrap();
    assert_eq!(found.key_id, key.key_id);
    let seq = engine.record_lookup(caller(), Some(&found)).await.unwrap();
    assert!(engine.find_by_secret("kl_live_nope").is_none());
    let none_seq = engine.record_lookup(caller(), None).await.unwrap();
    assert!(engine.wait_for_projections(Duration::from_secs(5)).await);

    let raw = engine.log().raw(seq).unwrap();
    assert!(!raw.windows(secret.expose().len()).any(|w| w == secret.expose().as_bytes()));
    match engine.log().event(seq).unwrap().payload {
        Payload::Lookup(l) => assert_eq!((l.found, l.workspace), (Some(key.key_id), ws("acme"))),
        other => panic!("not a lookup: {other:?}"),
    }
    match engine.log().event(none_seq).unwrap().payload {
        Payload::Lookup(l) => assert_eq!((l.found, l.workspace), (None, WorkspaceId::ledger())),
        other => panic!("not a lookup: {other:?}"),
    }
    let report = engine.audit().compromise(&engine.key(&key.key_id).unwrap(), None, None).unwrap();
    assert_eq!((report.uses.allowed, report.uses.denied), (1, 1));
    assert_eq!(report.after_revocation.count, 1);
    assert_eq!(report.after_revocation.sources[0].value, "203.0.113.5");
    assert_eq!(engine.audit().request_events("gw-77").unwrap().len(), 2);
    let (low, high) = audit::cidr_range("203.0.113.0".parse().unwrap(), 24).unwrap();
    let sources = engine.audit().sources(low, high, None, None).unwrap();
    assert_eq!((sources.len(), sources[0].count, sources[0].allowed), (1, 2, 1));
    // The active set now: the admin key only in `_ledger`, nothing in acme.
    assert!(engine.audit().active_at(&ws("acme"), Timestamp::now()).unwrap().is_empty());
    assert_eq!(engine.audit().active_at(&WorkspaceId::ledger(), Timestamp::now()).unwrap().len(), 1);
    engine.shutdown().await;
}

/// Initialises `dir` and appends `uses` uses of one new key (over 30 days from now, from 7
/// /24s, 4 user agents, 50 paths; the `i`th with gateway request id `gateway_id(i)`) straight
/// to its log. Returns the key and the bytes of the events written.
fn write_hot_key_uses(dir: &Path, uses: u64, gateway_id: impl Fn(u64) -> String) -> (KeyId, u64) {
    let init = init(dir);
    let secrets = keyledger_ledger::datadir::load(dir).unwrap();
    let events_dir = dir.join(keyledger_ledger::datadir::LOG_DIR).join("events");
    let (mut segments, _) =
        SegmentLog::open(OsStorage::shared(), &events_dir, SegmentOptions::default()).unwrap();
    let start_seq = segments.len();
    let mut g = Generator {
        rng: Rng(42),
        next_seq: start_seq,
        state: LedgerState::default(),
        events: Vec::new(),
        at: Timestamp::now(),
        pepper: secrets.pepper,
        admin: init.admin_key_id,
        secrets: Vec::new(),
    };
    let rid = g.rid();
    let hot = g.create(None, ws("acme"), None, rid);
    let step = 30 * DAY / uses.max(1) as i64;
    let mut written = 0u64;
    let mut flush = |g: &mut Generator| {
        let bytes: Vec<Vec<u8>> = g.events.iter().map(encode_event).collect();
        written += bytes.iter().map(|b| b.len() as u64).sum::<u64>();
        let records: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
        segments.append_batch(&records).unwrap();
        g.events.clear();
    };
    for i in 0..uses {
        g.at = g.at.plus_micros(step);
        let context = UsageContext {
            ip: Some(IpAddr::from([203, 0, (i % 7) as u8, (i % 251) as u8])),
            user_agent: Some(AGENTS[(i % 4) as usize].into()),
            method: Some("GET".into()),
            path: Some(format!("/v1/orders/{}", i % 50)),
            request_id: Some(gateway_id(i)),
            scopes: vec![],
            resource: None,
        };
        let rid = g.rid();
        g.push(Actor::Verifier, rid, Payload::Used(Usage { key_id: hot, workspace: ws("acme"), context }));
        if g.events.len() >= 5000 {
            flush(&mut g);
        }
    }
    flush(&mut g);
    segments.sync().unwrap();
    segments.close().unwrap();
    (hot, written)
}

/// The request index is bucketed by seq (65,536 seqs a bucket, rows of 4,096): an id used
/// in several buckets is found in each, and keyledger's own ids are found in any bucket and
/// on either side of a row's block.
#[test]
fn request_ids_are_found_across_index_buckets() {
    let dir = support::DataDir::new();
    let uses = 70_000;
    // Each id is used 14 times, 5,000 uses apart: in both buckets.
    write_hot_key_uses(&dir, uses, |i| format!("gw-{:06}", i % 5_000));
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(runtime.block_on(engine.wait_for_projections(Duration::from_secs(60))));
    let events = all_events(&engine);
    assert!(events.len() as u64 > 65_536 + 1_000);
    let mut by_gateway: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        if let Some((_, _, context)) = usage_parts(event) {
            by_gateway.entry(context.request_id.clone().unwrap()).or_default().push(event.seq);
        }
    }
    let mut across = 0;
    for (id, seqs) in by_gateway.iter().step_by(97) {
        let got: Vec<u64> = engine.audit().request_events(id).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(&got, seqs, "gateway request {id}");
        across += usize::from(seqs.iter().any(|s| *s < 65_536) && seqs.iter().any(|s| *s >= 65_536));
    }
    assert!(across > 10, "only {across} sampled ids span two buckets");
    for seq in [0, 4_095, 4_096, 65_535, 65_536, 65_537, events.len() as u64 - 1] {
        let own = events[seq as usize].request_id.to_string();
        let got: Vec<u64> = engine.audit().request_events(&own).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![seq], "own request {own}");
    }
    engine.shutdown_blocking();
}

/// A projections file written with the first audit layout (variable-width rows, 16-byte
/// request keys, no `layout` row) opens: its audit tables are dropped and rebuilt from the
/// log, and answer as before.
#[test]
fn an_older_audit_layout_is_rebuilt_from_the_log_on_open() {
    let dir = support::DataDir::new();
    build(&dir, 0x5eed_0004, 400);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert!(runtime.block_on(engine.wait_for_projections(Duration::from_secs(10))));
    let expected = audit::dump(engine.projections_db().get().unwrap().as_ref()).unwrap();
    let last = engine.log().event(engine.log().len() - 1).unwrap();
    engine.shutdown_blocking();
    drop(engine);
    {
        let db = redb::Database::create(dir.join(keyledger_ledger::datadir::PROJECTIONS_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        for name in audit::TABLE_NAMES {
            txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name)).unwrap();
        }
        let meta = redb::TableDefinition::<&str, u64>::new("audit_meta");
        txn.open_table(meta).unwrap().insert("next_key_no", 2).unwrap();
        let events = redb::TableDefinition::<&[u8], &[u8]>::new("audit_key_events");
        txn.open_table(events).unwrap().insert([0u8; 13].as_slice(), [0u8; 9].as_slice()).unwrap();
        let requests = redb::TableDefinition::<&[u8], ()>::new("audit_requests");
        txn.open_table(requests).unwrap().insert([7u8; 16].as_slice(), ()).unwrap();
        txn.commit().unwrap();
    }
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert!(runtime.block_on(engine.wait_for_projections(Duration::from_secs(10))));
    let reopened = audit::dump(engine.projections_db().get().unwrap().as_ref()).unwrap();
    assert!(reopened == expected, "the rebuilt audit tables differ from the original ones");
    let found = engine.audit().request_events(&last.request_id.to_string()).unwrap();
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![last.seq]);
    engine.shutdown_blocking();
}

/// Opens a data dir whose audit tables were rewritten by `downgrade` to an older layout
/// (`layout` in `audit_meta`) and checks that they are dropped and rebuilt from the log,
/// byte for byte as they were, in [`audit::LAYOUT_VERSION`].
fn check_rebuilt_from_older_layout(seed: u64, layout: u64, downgrade: impl FnOnce(&redb::WriteTransaction)) {
    let dir = support::DataDir::new();
    build(&dir, seed, 400);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert!(runtime.block_on(engine.wait_for_projections(Duration::from_secs(10))));
    let expected = audit::dump(engine.projections_db().get().unwrap().as_ref()).unwrap();
    let last = engine.log().event(engine.log().len() - 1).unwrap();
    engine.shutdown_blocking();
    drop(engine);
    {
        let db = redb::Database::create(dir.join(keyledger_ledger::datadir::PROJECTIONS_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        let meta = redb::TableDefinition::<&str, u64>::new("audit_meta");
        txn.open_table(meta).unwrap().insert("layout", layout).unwrap();
        downgrade(&txn);
        txn.commit().unwrap();
    }
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert!(runtime.block_on(engine.wait_for_projections(Duration::from_secs(10))));
    let reopened = audit::dump(engine.projections_db().get().unwrap().as_ref()).unwrap();
    assert!(reopened == expected, "the rebuilt audit tables differ from the original ones");
    let meta = reopened.iter().find(|(name, _)| name == "audit_meta").unwrap();
    assert!(meta.1.contains(&(b"layout".to_vec(), audit::LAYOUT_VERSION.to_be_bytes().to_vec())));
    let found = engine.audit().request_events(&last.request_id.to_string()).unwrap();
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![last.seq]);
    engine.shutdown_blocking();
}

/// Replaces the audit table `name` by one of fixed-width rows (`K` key bytes, `V` value
/// bytes) holding one row, as an older layout wrote it.
fn replace_with_fixed_rows<const K: usize, const V: usize>(txn: &redb::WriteTransaction, name: &str) {
    txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name)).unwrap();
    let old = redb::TableDefinition::<&[u8; K], &[u8; V]>::new(name);
    txn.open_table(old).unwrap().insert(&[1u8; K], &[1u8; V]).unwrap();
}

/// Rewrites audit tables as an older layout had them.
type Downgrade = fn(&redb::WriteTransaction);

/// Projections files written with each older audit layout open: their audit tables are
/// dropped and rebuilt from the log. Layout 2 keyed `audit_src_events` by the 16-byte
/// address; 3 had one `audit_requests` row per request id, with no value; 4 one
/// `audit_key_events` row per event; 5 one `audit_src_events` row per use.
#[test]
fn older_audit_layouts_are_rebuilt_from_the_log_on_open() {
    assert_eq!(audit::LAYOUT_VERSION, 6);
    let layouts: [(u64, Downgrade); 4] = [
        (2, |txn| replace_with_fixed_rows::<28, 9>(txn, "audit_src_events")),
        (3, |txn| {
            txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new("audit_requests")).unwrap();
            let old = redb::TableDefinition::<&[u8; 10], ()>::new("audit_requests");
            txn.open_table(old).unwrap().insert(&[1u8; 10], ()).unwrap();
        }),
        (4, |txn| replace_with_fixed_rows::<13, 21>(txn, "audit_key_events")),
        (5, |txn| replace_with_fixed_rows::<16, 9>(txn, "audit_src_events")),
    ];
    for (layout, downgrade) in layouts {
        check_rebuilt_from_older_layout(0x5eed_0003 + layout, layout, downgrade);
    }
}

/// Size and speed on a larger synthetic log (run with `--ignored --nocapture`;
/// `AUDIT_BENCH_USES` sets the hot key's uses, default 200 000).
#[test]
#[ignore]
fn audit_index_size_and_speed() {
    let uses: u64 = std::env::var("AUDIT_BENCH_USES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = support::DataDir::new();
    let (hot, written) = write_hot_key_uses(&dir, uses, |i| format!("gw-{i:012}"));
    let projections_file = dir.join(keyledger_ledger::datadir::PROJECTIONS_FILE);
    let before = std::fs::metadata(&projections_file).unwrap().len();
    let opened = std::time::Instant::now();
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let index_time = opened.elapsed();
    let after = std::fs::metadata(&projections_file).unwrap().len();
    let fresh = dir.with_file_name("fresh.redb");
    let mut rebuilt = Projections::open(&fresh, projection_list()).unwrap();
    rebuilt.rebuild(engine.log()).unwrap();
    drop(rebuilt);
    let rebuilt_size = std::fs::metadata(&fresh).unwrap().len();
    {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let mut db = redb::Database::create(&fresh).unwrap();
        let mut total = 0u64;
        {
            let txn = db.begin_read().unwrap();
            for name in audit::TABLE_NAMES {
                let table = txn.open_untyped_table(redb::TableDefinition::<(), ()>::new(name)).unwrap();
                let stats = table.stats().unwrap();
                let pages = (stats.leaf_pages() + stats.branch_pages()) * 4096;
                total += pages;
                println!(
                    "{name}: {} rows, {:.1} stored B/usage event, {:.1} page B/usage event",
                    table.len().unwrap(),
                    stats.stored_bytes() as f64 / uses as f64,
                    pages as f64 / uses as f64
                );
            }
        }
        println!("audit tables: {:.0} page B/usage event", total as f64 / uses as f64);
        db.compact().unwrap();
        drop(db);
        let compacted = std::fs::metadata(&fresh).unwrap().len();
        println!(
            "compacted rebuilt file: {compacted} bytes ({:.0} B/usage event)",
            compacted as f64 / uses as f64
        );
    }
    let key = engine.key(&hot).unwrap();
    let t = std::time::Instant::now();
    let report = engine.audit().compromise(&key, None, None).unwrap();
    let whole = t.elapsed();
    let mid = Timestamp(key.created_at.micros() + 7 * DAY + 12 * 3_600_000_000);
    let t = std::time::Instant::now();
    let windowed = engine.audit().compromise(&key, Some(mid), Some(mid.plus_micros(10 * DAY))).unwrap();
    let window = t.elapsed();
    let (low, high) = audit::cidr_range("203.0.3.0".parse().unwrap(), 24).unwrap();
    let t = std::time::Instant::now();
    let sources = engine.audit().sources(low, high, Some(mid), None).unwrap();
    let source = t.elapsed();
    let t = std::time::Instant::now();
    let found = engine.audit().request_events("gw-000000001234").unwrap();
    let request = t.elapsed();
    assert_eq!(report.uses.allowed, uses);
    assert_eq!(found.len(), 1);
    assert_eq!(sources.len(), 1);
    println!(
        "uses {uses}: log {:.0} B/event; projections file {} -> {} bytes on open ({:.0} B/usage event incremental), rebuilt {} bytes ({:.0} B/usage event); indexing {index_time:?}",
        written as f64 / uses as f64,
        before,
        after,
        (after - before) as f64 / uses as f64,
        rebuilt_size,
        rebuilt_size as f64 / uses as f64,
    );
    println!(
        "compromise whole life {whole:?} ({} sources), 10-day window {window:?} ({} uses), source /24 {source:?}, request id {request:?}",
        report.sources.len(),
        windowed.uses.allowed,
    );
    engine.shutdown_blocking();
}
