//! The witness submitters: one thread per configured witness, each submitting the log's
//! latest checkpoint with `add-checkpoint` whenever that witness has not cosigned it yet.
//!
//! A submitter only reads the latest stored checkpoint (a cheap clone), so the writer never
//! waits for it, and an older checkpoint still pending is simply superseded by the newer
//! one. Its state is one acknowledged size, a failure count and a retry time. The
//! cosignatures of the latest checkpoint any witness cosigned are kept in memory and with
//! the log's store ([`keyledger_log::witnessed`]: the log directory's file with the
//! embedded store, the database with PostgreSQL), and read back at start, each checked
//! again. So are fork alarms (the log directory's `witness-alarms.json`, or the database).
//! With a shared store one node at a time submits (the `jobs` lease), and every other node
//! reads the records back at each poll, so that all serve the same cosignatures and alarms,
//! and a node taking the lease over goes on from them (docs/architecture.md, "The log store
//! seam").
//!
//! Between polls a submitter sleeps, but [`WitnessService::wake`] (called when a
//! checkpoint is signed on demand, as for an export) makes it look at once; every new
//! cosignature bumps a watch ([`WitnessService::changes`]) an export waits on
//! (docs/export-format.md, "Witness cosignatures").

use super::policy::{Witness, WitnessPolicy};
use super::{FAILURE_CLASSES, WitnessOptions};
use base64::Engine as _;
use keyledger_core::Timestamp;
use keyledger_log::LogReader;
use keyledger_log::checkpoint::StoredCheckpoint;
use keyledger_log::witnessed::{AlarmRecord, WitnessRecords, WitnessRecordsError};
use keyledger_verify::cosignature::{CosignatureError, signature_lines_by, verify_cosignatures};
use keyledger_verify::merkle::Hash;
use keyledger_verify::note::open_checkpoint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Largest witness answer read (a few signature lines are expected).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Resubmissions after a 409 within one round before it counts as a failure.
const MAX_CONFLICT_RESENDS: u32 = 2;

/// Evidence that a witness has seen another view of this log (docs/operations.md,
/// "Witnesses").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkAlarm {
    /// The configured witness that showed it.
    pub witness: String,
    /// `witness_ahead` (409 with a size larger than the log's) or `foreign_cosignature` (a
    /// line under the witness's own key that does not verify over the log's checkpoint).
    pub kind: &'static str,
    /// The checkpoint keyledger submitted.
    pub log_size: u64,
    pub log_root: Hash,
    /// The size the witness claims to have cosigned (`witness_ahead`).
    pub witness_size: Option<u64>,
    pub detected_at: Timestamp,
}

impl ForkAlarm {
    fn record(&self, cleared: bool) -> AlarmRecord {
        AlarmRecord {
            witness: self.witness.clone(),
            kind: self.kind.to_owned(),
            log_size: self.log_size,
            log_root: self.log_root,
            witness_size: self.witness_size,
            detected_at: self.detected_at,
            cleared,
        }
    }

    /// The alarm a record holds, if its kind is one this build raises.
    fn from_record(record: &AlarmRecord) -> Option<Self> {
        let kind = ["witness_ahead", "foreign_cosignature"].into_iter().find(|k| *k == record.kind)?;
        Some(Self {
            witness: record.witness.clone(),
            kind,
            log_size: record.log_size,
            log_root: record.log_root,
            witness_size: record.witness_size,
            detected_at: record.detected_at,
        })
    }

    /// The alarm as JSON (the API's `fork_alarm` and the `log.fork_alarm` webhook's data).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "witness": self.witness,
            "kind": self.kind,
            "log_size": self.log_size,
            "log_root_hash": hex::encode(self.log_root),
            "witness_size": self.witness_size,
            "detected_at": self.detected_at.to_rfc3339(),
        })
    }
}

/// What one witness did last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessStatus {
    pub name: String,
    /// The size the witness last cosigned for this log (or reported in a 409), if known.
    pub acknowledged_size: Option<u64>,
    /// The class of the last failed submission (one of [`FAILURE_CLASSES`] or
    /// `fork_alarm`), cleared by a success.
    pub last_error: Option<&'static str>,
    pub last_success: Option<Timestamp>,
}

/// The latest checkpoint any witness cosigned, with its cosignatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The log's note followed by the cosignature lines, in the configured order.
    pub note: String,
    /// The witnesses whose cosignature it carries.
    pub witnesses: Vec<String>,
    /// Whether they meet the quorum.
    pub quorum_met: bool,
}

/// Everything the API shows about witnessing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessView {
    pub cosigned: Option<CosignedCheckpoint>,
    pub statuses: Vec<WitnessStatus>,
    pub fork_alarm: Option<ForkAlarm>,
    /// Cosignatures the quorum asks for (0: none, or no witnesses configured).
    pub quorum: usize,
}

/// One witness's counters, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessCountersView {
    pub witness: String,
    pub cosignatures: u64,
    pub failures: Vec<(&'static str, u64)>,
    pub fork_alarms: u64,
}

#[derive(Default)]
struct Counters {
    cosignatures: AtomicU64,
    failures: [AtomicU64; FAILURE_CLASSES.len()],
    fork_alarms: AtomicU64,
}

struct CosignedSet {
    size: u64,
    root: Hash,
    note: String,
    lines: Vec<Option<String>>,
}

impl CosignedSet {
    fn text(&self) -> String {
        let mut text = self.note.clone();
        self.lines.iter().flatten().for_each(|line| text.push_str(line));
        text
    }
}

struct State {
    set: Option<CosignedSet>,
    statuses: Vec<WitnessStatus>,
    fork_alarm: Option<ForkAlarm>,
    /// The last alarm per witness (its kind and the witness's claimed size), so the same
    /// answer repeated, for this or later checkpoints, alarms once; a cosignature clears it.
    last_alarm: Vec<Option<(&'static str, Option<u64>)>>,
}

/// Called once per new fork alarm (the engine queues the webhook).
pub(crate) type AlarmSink = Box<dyn Fn(&ForkAlarm) + Send + Sync>;

struct Shared {
    policy: WitnessPolicy,
    options: WitnessOptions,
    reader: LogReader,
    /// Where the cosigned checkpoint and fork alarms are kept (see the module docs).
    records: Box<dyn WitnessRecords>,
    state: Mutex<State>,
    /// Held while the cosigned checkpoint is stored, so writes land in the order they were
    /// made.
    persist: Mutex<()>,
    counters: Vec<Counters>,
    signal: Mutex<Signal>,
    signalled: Condvar,
    /// Bumped after each stored cosignature.
    changes: tokio::sync::watch::Sender<u64>,
    sink: AlarmSink,
    /// Checkpoints are submitted only while this says so (see [`crate::JobGate`]).
    gate: crate::JobGate,
}

/// What a sleeping submitter is woken by.
#[derive(Default)]
struct Signal {
    stop: bool,
    /// Wake-ups so far; a submitter sleeping sees it change.
    wakes: u64,
}

enum Submission {
    Cosigned(String),
    Conflict(u64),
    Foreign,
    Failed(&'static str),
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wake-ups so far (see [`Self::wait`]).
    fn wakes(&self) -> u64 {
        self.signal.lock().unwrap_or_else(|e| e.into_inner()).wakes
    }

    /// Waits up to `timeout`, until stopped, or until woken after `wakes` (what
    /// [`Self::wakes`] said before the caller last looked, so no wake-up is missed); true
    /// once stopping.
    fn wait(&self, timeout: Duration, wakes: u64) -> bool {
        let guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .signalled
            .wait_timeout_while(guard, timeout, |s| !s.stop && s.wakes == wakes)
            .unwrap_or_else(|e| e.into_inner());
        guard.stop
    }

    fn signal(&self, change: impl FnOnce(&mut Signal)) {
        change(&mut self.signal.lock().unwrap_or_else(|e| e.into_inner()));
        self.signalled.notify_all();
    }

    fn cosigned(&self, index: usize, checkpoint: &StoredCheckpoint, line: String) {
        self.counters[index].cosignatures.fetch_add(1, Ordering::Relaxed);
        let _persist = self.persist.lock().unwrap_or_else(|e| e.into_inner());
        let (cleared, text) = {
            let mut state = self.lock();
            let status = &mut state.statuses[index];
            status.acknowledged_size = Some(checkpoint.size);
            status.last_error = None;
            status.last_success = Some(Timestamp::now());
            let cleared = state.last_alarm[index].take().is_some();
            let stored = match &mut state.set {
                Some(set) if set.size == checkpoint.size && set.root == checkpoint.root => {
                    set.lines[index] = Some(line);
                    true
                }
                Some(set) if set.size > checkpoint.size => false,
                _ => {
                    let mut lines = vec![None; self.policy.witnesses().len()];
                    lines[index] = Some(line);
                    state.set = Some(CosignedSet {
                        size: checkpoint.size,
                        root: checkpoint.root,
                        note: checkpoint.note.clone(),
                        lines,
                    });
                    true
                }
            };
            (cleared, state.set.as_ref().filter(|_| stored).map(|set| (set.size, set.text())))
        };
        if cleared && let Err(error) = self.records.clear_alarm(self.policy.witnesses()[index].name()) {
            tracing::warn!(%error, "could not mark the witness's fork alarm cleared");
        }
        let Some((size, text)) = text else { return };
        if let Err(error) = self.records.store_cosigned(size, &text) {
            tracing::error!(%error, "could not store the cosigned checkpoint; it is served from memory");
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn failed(&self, index: usize, class: &'static str) {
        if let Some(slot) = FAILURE_CLASSES.iter().position(|c| *c == class) {
            self.counters[index].failures[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.lock().statuses[index].last_error = Some(class);
    }

    fn alarm(
        &self,
        index: usize,
        kind: &'static str,
        checkpoint: &StoredCheckpoint,
        witness_size: Option<u64>,
    ) {
        let witness = self.policy.witnesses()[index].name().to_owned();
        let alarm = ForkAlarm {
            witness,
            kind,
            log_size: checkpoint.size,
            log_root: checkpoint.root,
            witness_size,
            detected_at: Timestamp::now(),
        };
        {
            let mut state = self.lock();
            state.statuses[index].last_error = Some("fork_alarm");
            let key = Some((kind, witness_size));
            if state.last_alarm[index] == key {
                return;
            }
            state.last_alarm[index] = key;
            // Counted before it is shown: whoever sees the alarm (under this lock) sees it
            // counted in the metrics too.
            self.counters[index].fork_alarms.fetch_add(1, Ordering::Relaxed);
            state.fork_alarm = Some(alarm.clone());
        }
        if let Err(error) = self.records.record_alarm(&alarm.record(false)) {
            tracing::error!(%error, "could not store the fork alarm; only this node shows it");
        }
        tracing::error!(
            witness = %alarm.witness,
            kind,
            log_size = alarm.log_size,
            log_root = %hex::encode(alarm.log_root),
            witness_size,
            "FORK ALARM: a witness has seen another view of this log"
        );
        (self.sink)(&alarm);
    }
}

/// The running submitters of an engine (none without a witness policy).
pub(crate) struct WitnessService {
    shared: Option<Arc<Shared>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Why a stored cosigned checkpoint is not served.
enum Unusable {
    /// Of a size this node's log has not reached yet: it may be usable later.
    Ahead,
    /// Not a checkpoint of this log, or no line verifies under a configured witness's key.
    Invalid,
}

/// Checks a stored cosigned checkpoint as if it came from outside: the log's signature,
/// that it is the log's tree at its size (the latest checkpoint or an earlier one), and
/// each cosignature line under a configured witness's key; keeps only the lines that
/// verify, at most one per witness.
fn verify_set(reader: &LogReader, policy: &WitnessPolicy, text: &str) -> Result<CosignedSet, Unusable> {
    let verifier = reader.verifier();
    let checkpoint = open_checkpoint(text, verifier).map_err(|_| Unusable::Invalid)?;
    if checkpoint.size > reader.len() {
        return Err(Unusable::Ahead);
    }
    if reader.root_at(checkpoint.size).ok() != Some(checkpoint.root) {
        return Err(Unusable::Invalid);
    }
    // The log's own note: the checkpoint text and the log's signature line(s).
    let body_len = text.find("\n\n").ok_or(Unusable::Invalid)? + 1;
    let log_lines =
        signature_lines_by(text, std::slice::from_ref(verifier)).map_err(|_| Unusable::Invalid)?;
    let note = format!("{}\n{log_lines}", &text[..body_len]);
    let mut lines = vec![None; policy.witnesses().len()];
    for line in text[body_len + 1..].split_inclusive('\n') {
        let cosigned = format!("{note}{line}");
        for (index, witness) in policy.witnesses().iter().enumerate() {
            if verify_cosignatures(&cosigned, std::slice::from_ref(&witness.key)).is_ok_and(|c| !c.is_empty())
            {
                lines[index].get_or_insert_with(|| line.to_owned());
            }
        }
    }
    if lines.iter().all(Option::is_none) {
        return Err(Unusable::Invalid);
    }
    Ok(CosignedSet { size: checkpoint.size, root: checkpoint.root, note, lines })
}

impl Shared {
    /// With a shared store, on a node not submitting: takes what the submitting node stored
    /// (a later cosigned checkpoint, more cosignatures of the same one, the fork alarms).
    /// Stored alarms that cannot be read are an error, and the alarms shown stay as they
    /// were: an alarm is evidence, and a store that cannot be read must not make it vanish.
    fn refresh(&self) -> Result<(), WitnessRecordsError> {
        let names: Vec<String> = self.policy.witnesses().iter().map(|w| w.name().to_owned()).collect();
        let text = self.records.cosigned().unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the stored cosigned checkpoint");
            None
        });
        // Checked only when it changed (what this node holds was checked already).
        let held = self.lock().set.as_ref().map(CosignedSet::text);
        let set = match text.filter(|text| held.as_ref() != Some(text)) {
            None => None,
            Some(text) => match verify_set(&self.reader, &self.policy, &text) {
                Ok(set) => Some(set),
                Err(Unusable::Ahead) => None,
                Err(Unusable::Invalid) => {
                    tracing::debug!("ignoring a stored cosigned checkpoint that does not verify");
                    None
                }
            },
        };
        let alarms = self.records.alarms(&names);
        let changed = {
            let mut state = self.lock();
            let changed = match (set, &state.set) {
                (Some(set), Some(held))
                    if set.size < held.size
                        || (set.size == held.size && set.root == held.root && set.lines == held.lines) =>
                {
                    false
                }
                (Some(set), _) => {
                    for (status, line) in state.statuses.iter_mut().zip(&set.lines) {
                        if line.is_some() {
                            status.acknowledged_size = Some(set.size);
                        }
                    }
                    state.set = Some(set);
                    true
                }
                (None, _) => false,
            };
            if let Ok(alarms) = &alarms {
                for (index, name) in names.iter().enumerate() {
                    let record = alarms.iter().find(|a| a.witness == *name);
                    let alarm = record.and_then(ForkAlarm::from_record);
                    state.last_alarm[index] = alarm
                        .as_ref()
                        .filter(|_| record.is_some_and(|r| !r.cleared))
                        .map(|a| (a.kind, a.witness_size));
                    if let Some(alarm) = alarm
                        && state.fork_alarm.as_ref().is_none_or(|shown| shown.detected_at < alarm.detected_at)
                    {
                        state.fork_alarm = Some(alarm);
                    }
                }
            }
            changed
        };
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        alarms.map(drop)
    }
}

impl WitnessService {
    pub(crate) fn start(
        options: WitnessOptions,
        reader: LogReader,
        records: Box<dyn WitnessRecords>,
        sink: AlarmSink,
        gate: crate::JobGate,
    ) -> std::io::Result<Self> {
        let Some(policy) = options.policy.clone() else {
            return Ok(Self { shared: None, threads: Mutex::new(Vec::new()) });
        };
        let statuses = policy
            .witnesses()
            .iter()
            .map(|w| WitnessStatus {
                name: w.name().to_owned(),
                acknowledged_size: None,
                last_error: None,
                last_success: None,
            })
            .collect();
        let count = policy.witnesses().len();
        let shared = Arc::new(Shared {
            counters: (0..count).map(|_| Counters::default()).collect(),
            policy,
            options,
            reader,
            records,
            state: Mutex::new(State { set: None, statuses, fork_alarm: None, last_alarm: vec![None; count] }),
            persist: Mutex::new(()),
            signal: Mutex::new(Signal::default()),
            signalled: Condvar::new(),
            changes: tokio::sync::watch::Sender::new(0),
            sink,
            gate,
        });
        // What was cosigned before this start (by this node, or by another of a shared store),
        // and the fork alarms: a start that cannot read them does not serve without them.
        shared.refresh().map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{error}; they may hold evidence of a forked log: keep a copy, then repair or \
                     remove them (docs/operations.md, \"Witnesses\")"
                ),
            )
        })?;
        let service = Self { shared: Some(shared.clone()), threads: Mutex::new(Vec::new()) };
        let spawned = (0..count)
            .try_for_each(|index| {
                let shared = shared.clone();
                service.spawn(format!("keyledger-witness-{index}"), move || submit_loop(&shared, index))
            })
            .and_then(|()| match shared.records.is_shared() {
                true => service.spawn("keyledger-witness-sync".into(), move || read_back_loop(&shared)),
                false => Ok(()),
            });
        if let Err(error) = spawned {
            (service.stopper())();
            return Err(error);
        }
        Ok(service)
    }

    fn spawn(&self, name: String, run: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let thread = std::thread::Builder::new().name(name).spawn(run)?;
        self.threads.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        Ok(())
    }

    /// What the API shows.
    pub(crate) fn view(&self) -> WitnessView {
        let Some(shared) = &self.shared else { return WitnessView::default() };
        let state = shared.lock();
        let cosigned = state.set.as_ref().map(|set| {
            let indexes: Vec<usize> = (0..set.lines.len()).filter(|i| set.lines[*i].is_some()).collect();
            CosignedCheckpoint {
                size: set.size,
                root: set.root,
                note: set.text(),
                witnesses: indexes.iter().map(|i| shared.policy.witnesses()[*i].name().to_owned()).collect(),
                quorum_met: shared.policy.met_by(&indexes),
            }
        });
        WitnessView {
            cosigned,
            statuses: state.statuses.clone(),
            fork_alarm: state.fork_alarm.clone(),
            quorum: shared.policy.required(),
        }
    }

    /// Makes every submitter look for a new checkpoint now instead of at its next poll
    /// (a submitter backing off after failures still waits for its retry time).
    pub(crate) fn wake(&self) {
        if let Some(shared) = &self.shared {
            shared.signal(|s| s.wakes = s.wakes.wrapping_add(1));
        }
    }

    /// A watch that changes after each stored cosignature; `None` without witnesses.
    pub(crate) fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared.as_ref().map(|shared| shared.changes.subscribe())
    }

    /// Each configured witness's counters.
    pub(crate) fn counters(&self) -> Vec<WitnessCountersView> {
        let Some(shared) = &self.shared else { return Vec::new() };
        shared
            .policy
            .witnesses()
            .iter()
            .zip(&shared.counters)
            .map(|(witness, counters)| WitnessCountersView {
                witness: witness.name().to_owned(),
                cosignatures: counters.cosignatures.load(Ordering::Relaxed),
                failures: FAILURE_CLASSES
                    .iter()
                    .zip(&counters.failures)
                    .map(|(class, n)| (*class, n.load(Ordering::Relaxed)))
                    .collect(),
                fork_alarms: counters.fork_alarms.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// What stops the submitters (a request under way finishes first, within its
    /// timeout); blocking, so async callers run it on a blocking thread.
    pub(crate) fn stopper(&self) -> impl FnOnce() + Send + 'static {
        if let Some(shared) = &self.shared {
            shared.signal(|s| s.stop = true);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        move || {
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for WitnessService {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.signal(|s| s.stop = true);
        }
    }
}

fn submit_loop(shared: &Shared, index: usize) {
    let witness = &shared.policy.witnesses()[index];
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(shared.options.timeout))
        .user_agent(concat!("keyledger-witness-client/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let (mut acked, mut done) = (0, None);
    let mut failures = 0u32;
    let mut next_try = Instant::now();
    loop {
        let poll = shared.options.poll_interval;
        let wakes = shared.wakes();
        // What this witness cosigned as far as the records know (stored before this start,
        // or by another node before this one took the `jobs` lease over).
        if let Some(set) = shared.lock().set.as_ref().filter(|set| set.lines[index].is_some())
            && done.is_none_or(|(size, _)| size < set.size)
        {
            acked = acked.max(set.size);
            done = Some((set.size, set.root));
        }
        let checkpoint = shared.reader.latest_checkpoint();
        let due = checkpoint
            .as_ref()
            .filter(|c| done != Some((c.size, c.root)) && Instant::now() >= next_try && (shared.gate)());
        if let Some(checkpoint) = due {
            if acked > checkpoint.size {
                acked = 0;
            }
            let mut resends = 0;
            let failure = loop {
                match submit(&agent, witness, &shared.reader, checkpoint, acked) {
                    Submission::Cosigned(line) => {
                        acked = checkpoint.size;
                        done = Some((checkpoint.size, checkpoint.root));
                        shared.cosigned(index, checkpoint, line);
                        break None;
                    }
                    Submission::Conflict(size) if size > checkpoint.size => {
                        shared.alarm(index, "witness_ahead", checkpoint, Some(size));
                        break Some("fork_alarm");
                    }
                    Submission::Conflict(size) if size != acked && resends < MAX_CONFLICT_RESENDS => {
                        resends += 1;
                        acked = size;
                        shared.lock().statuses[index].acknowledged_size = Some(size);
                    }
                    Submission::Conflict(_) => break Some("conflict"),
                    Submission::Foreign => {
                        shared.alarm(index, "foreign_cosignature", checkpoint, None);
                        break Some("fork_alarm");
                    }
                    Submission::Failed(class) => break Some(class),
                }
            };
            match failure {
                None => failures = 0,
                Some(class) => {
                    if class != "fork_alarm" {
                        shared.failed(index, class);
                    }
                    failures = failures.saturating_add(1);
                    let delay = shared.options.backoff(failures);
                    next_try = Instant::now() + delay;
                    tracing::warn!(
                        witness = witness.name(),
                        class,
                        size = checkpoint.size,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "witness submission failed; will retry"
                    );
                }
            }
        }
        if shared.wait(poll, wakes) {
            return;
        }
    }
}

/// With a shared store: while this node does not submit (another holds the `jobs` lease),
/// reads back what the submitting node stored, at each poll.
fn read_back_loop(shared: &Shared) {
    loop {
        let wakes = shared.wakes();
        if shared.wait(shared.options.poll_interval, wakes) {
            return;
        }
        if !(shared.gate)()
            && let Err(error) = shared.refresh()
        {
            tracing::warn!(%error, "cannot read the stored fork alarms; showing the ones read before");
        }
    }
}

/// One `add-checkpoint` request for `checkpoint`, with a consistency proof from `old`.
fn submit(
    agent: &ureq::Agent,
    witness: &Witness,
    reader: &LogReader,
    checkpoint: &StoredCheckpoint,
    old: u64,
) -> Submission {
    let proof = if old == 0 || old == checkpoint.size {
        Vec::new()
    } else {
        match reader.tree().consistency_proof(old, checkpoint.size) {
            Ok(proof) => proof,
            Err(_) => return Submission::Conflict(0),
        }
    };
    let mut body = format!("old {old}\n");
    for hash in &proof {
        body.push_str(&base64::engine::general_purpose::STANDARD.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(&checkpoint.note);
    let url = format!("{}/add-checkpoint", witness.url);
    let mut response =
        match agent.post(&url).header("content-type", "text/plain; charset=utf-8").send(body.as_bytes()) {
            Ok(response) => response,
            Err(ureq::Error::Timeout(_)) => return Submission::Failed("timeout"),
            Err(_) => return Submission::Failed("connection_failed"),
        };
    let status = response.status().as_u16();
    let size_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("text/x.tlog.size"));
    let text = match status {
        200 | 409 => match response.body_mut().with_config().limit(MAX_RESPONSE_BYTES).read_to_string() {
            Ok(text) => text,
            Err(ureq::Error::Timeout(_)) => return Submission::Failed("timeout"),
            Err(_) => return Submission::Failed("bad_response"),
        },
        403 => return Submission::Failed("forbidden"),
        404 => return Submission::Failed("unknown_log"),
        422 => return Submission::Failed("unprocessable"),
        500..=599 => return Submission::Failed("server_error"),
        _ => return Submission::Failed("unexpected_status"),
    };
    if status == 409 {
        return match parse_size(&text).filter(|_| size_type) {
            Some(size) => Submission::Conflict(size),
            None => Submission::Failed("bad_response"),
        };
    }
    cosignature_from(witness, checkpoint, &text)
}

/// `<decimal>\n`, canonical (no sign, no leading zero).
fn parse_size(text: &str) -> Option<u64> {
    let digits = text.strip_suffix('\n')?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The witness's valid cosignature line over `checkpoint` from a 200 answer's lines.
fn cosignature_from(witness: &Witness, checkpoint: &StoredCheckpoint, text: &str) -> Submission {
    let mut valid = None;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') || !line.starts_with("\u{2014} ") {
            return Submission::Failed("bad_response");
        }
        let note = format!("{}{line}", checkpoint.note);
        match verify_cosignatures(&note, std::slice::from_ref(&witness.key)) {
            Ok(found) if !found.is_empty() => {
                valid.get_or_insert_with(|| line.to_owned());
            }
            // Another key's line: ignored (tlog-witness).
            Ok(_) => {}
            // The witness's own key id over something that is not this checkpoint.
            Err(CosignatureError::BadCosignature { .. }) => return Submission::Foreign,
            Err(_) => return Submission::Failed("bad_response"),
        }
    }
    valid.map_or(Submission::Failed("bad_response"), Submission::Cosigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_canonical_decimals_with_a_newline() {
        assert_eq!(parse_size("0\n"), Some(0));
        assert_eq!(parse_size("42\n"), Some(42));
        for bad in ["", "42", "042\n", "-1\n", "+1\n", " 1\n", "1\n\n", "99999999999999999999\n"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
