//! What the registry remembers of leak reports (docs/leaks.md): each workspace's `on_leak`
//! choice, and per key the fingerprints of the (url, source) pairs already reported, so a
//! replayed report is recorded once.
//!
//! Both are derived from `leak_policy_set` and `leak_reported` events only, so a replay of
//! the log rebuilds them exactly; the registry projection persists them alongside policies.
//! Bound: at most [`MAX_REPORTS_PER_KEY`] fingerprints per key (the oldest is forgotten
//! first; a report older than that, sent again, is recorded again).

use keyledger_core::{KeyId, LeakPolicySet, LeakReported, OnLeak, WorkspaceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most (url, source) fingerprints remembered per key.
pub const MAX_REPORTS_PER_KEY: usize = 64;

/// The fingerprint of a report's (url, source): BLAKE3 of both, length-prefixed.
pub fn report_fingerprint(url: Option<&str>, source: Option<&str>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in [url, source] {
        match part {
            Some(text) => {
                hasher.update(&[1]);
                hasher.update(&(text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            None => {
                hasher.update(&[0]);
            }
        }
    }
    *hasher.finalize().as_bytes()
}

/// Leak state of the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaks {
    /// Workspaces whose `on_leak` was ever set (absent means [`OnLeak::Notify`]).
    pub on_leak: BTreeMap<WorkspaceId, OnLeak>,
    /// Fingerprints of the reports recorded per key, oldest first, at most
    /// [`MAX_REPORTS_PER_KEY`].
    pub reported: BTreeMap<KeyId, Vec<[u8; 32]>>,
}

impl Leaks {
    pub fn on_leak(&self, workspace: &WorkspaceId) -> OnLeak {
        self.on_leak.get(workspace).copied().unwrap_or_default()
    }

    /// Whether this key's report with this fingerprint was already recorded.
    pub fn already_reported(&self, key_id: &KeyId, fingerprint: &[u8; 32]) -> bool {
        self.reported.get(key_id).is_some_and(|seen| seen.contains(fingerprint))
    }

    pub(crate) fn apply_report(&mut self, report: &LeakReported) {
        let fingerprint = report_fingerprint(report.url.as_deref(), report.source.as_deref());
        let seen = self.reported.entry(report.key_id).or_default();
        if !seen.contains(&fingerprint) {
            if seen.len() >= MAX_REPORTS_PER_KEY {
                seen.remove(0);
            }
            seen.push(fingerprint);
        }
    }

    pub(crate) fn apply_policy(&mut self, set: &LeakPolicySet) {
        self.on_leak.insert(set.workspace.clone(), set.on_leak);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::LeakReporter;

    #[test]
    fn fingerprints_are_bounded_and_distinguish_url_from_source() {
        assert_ne!(report_fingerprint(Some("ab"), Some("c")), report_fingerprint(Some("a"), Some("bc")));
        assert_ne!(report_fingerprint(None, Some("x")), report_fingerprint(Some("x"), None));
        let key_id = KeyId::from_bytes([7; 16]);
        let mut leaks = Leaks::default();
        for i in 0..(MAX_REPORTS_PER_KEY + 5) {
            leaks.apply_report(&LeakReported {
                key_id,
                workspace: "acme".parse().unwrap(),
                reporter: LeakReporter::Github,
                url: Some(format!("https://github.com/a/b/blob/{i}")),
                source: Some("content".into()),
            });
        }
        assert_eq!(leaks.reported[&key_id].len(), MAX_REPORTS_PER_KEY);
        let last = report_fingerprint(
            Some(&format!("https://github.com/a/b/blob/{}", MAX_REPORTS_PER_KEY + 4)),
            Some("content"),
        );
        assert!(leaks.already_reported(&key_id, &last));
        let first = report_fingerprint(Some("https://github.com/a/b/blob/0"), Some("content"));
        assert!(!leaks.already_reported(&key_id, &first));
    }
}
