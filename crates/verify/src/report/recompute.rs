//! Recomputing a report's figures from events an auditor holds (docs/compliance.md,
//! "Verifying a report"): a saved export, or the log's entry bundles (C2SP tlog-tiles).
//!
//! [`Recompute`] takes the stored bytes of events (`0x01 ‖ postcard`, docs/log-format.md),
//! decodes them, folds those below the report's checkpoint size with [`ComplianceFold`] and,
//! when they are every leaf from seq 0 on, hashes them into a [`Frontier`] so that
//! [`Recompute::finish`] can prove that the events folded are exactly the tree the report's
//! signed checkpoint names. Then the recomputed figures must equal the report's, member by
//! member.

use super::ReportError;
use super::fold::ComplianceFold;
use super::signed::{OpenedReport, first_difference};
use crate::export::{ExportSummary, verify_export};
use crate::merkle::Frontier;
use crate::note::VerifierKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyledger_core::decode_event;
use serde_json::Value;
use std::io::BufRead;

/// How much of the report's tree the recomputation saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every event of the checkpoint's tree, whose root was recomputed and matches: no
    /// event was left out.
    CompleteTree,
    /// Events each proven in the log (a filtered export); one of the workspace's events
    /// left out of the export would go unnoticed.
    LinesIncluded,
}

/// A successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub coverage: Coverage,
    /// Events of the checkpoint's tree decoded and folded.
    pub events: u64,
}

/// A running recomputation.
pub struct Recompute<'a> {
    report: &'a OpenedReport,
    fold: ComplianceFold,
    /// Leaves from seq 0 on, while they are contiguous.
    frontier: Option<Frontier>,
    events: u64,
}

impl<'a> Recompute<'a> {
    pub fn new(report: &'a OpenedReport) -> Self {
        Self {
            report,
            fold: ComplianceFold::new(report.params.clone()),
            frontier: Some(Frontier::new(report.anchor.tree_hash)),
            events: 0,
        }
    }

    /// Folds the event stored as `raw` (if below the checkpoint's size).
    ///
    /// # Errors
    ///
    /// [`ReportError::Events`] if the bytes do not decode or seqs do not increase.
    pub fn push_raw(&mut self, raw: &[u8]) -> Result<(), ReportError> {
        let event =
            decode_event(raw).map_err(|e| ReportError::Events(format!("an event does not decode: {e}")))?;
        let size = self.report.anchor.size;
        if event.seq >= size {
            return Ok(());
        }
        if let Some(frontier) = &mut self.frontier {
            if frontier.size() == event.seq {
                frontier.push(self.report.anchor.tree_hash.leaf(raw));
            } else {
                self.frontier = None;
            }
        }
        self.events += 1;
        self.fold.push(&event)
    }

    /// Compares the recomputed figures with the report's.
    ///
    /// # Errors
    ///
    /// [`ReportError::Checkpoint`] if all leaves were seen and their root is not the
    /// checkpoint's; [`ReportError::Mismatch`] naming the first figure that differs.
    pub fn finish(self) -> Result<Checked, ReportError> {
        let anchor = &self.report.anchor;
        let coverage = match &self.frontier {
            Some(frontier) if frontier.size() == anchor.size => {
                if frontier.root() != anchor.root {
                    return Err(ReportError::Checkpoint(
                        "the events' tree root is not the checkpoint's: these are not the log's events"
                            .into(),
                    ));
                }
                Coverage::CompleteTree
            }
            _ => Coverage::LinesIncluded,
        };
        let recomputed = self.fold.finish();
        if let Some((path, reported, computed)) =
            first_difference("figures", &self.report.figures, &recomputed)
        {
            return Err(ReportError::Mismatch { path, reported, recomputed: computed });
        }
        Ok(Checked { coverage, events: self.events })
    }

    /// [`Self::finish`] for events that claim to be every leaf of the log from seq 0 on (the
    /// log's entry bundles, an unfiltered export): anything short of the checkpoint's whole
    /// tree recomputed is an error, since nothing else proves these events are the log's.
    ///
    /// # Errors
    ///
    /// [`ReportError::Events`] if an event was missing, out of place or beyond the
    /// checkpoint's size, and those of [`Self::finish`].
    pub fn finish_complete(self) -> Result<Checked, ReportError> {
        let checked = self.finish()?;
        if checked.coverage != Coverage::CompleteTree {
            return Err(ReportError::Events(
                "the events do not make up the report's tree (one is missing, out of place or beyond it)"
                    .into(),
            ));
        }
        Ok(checked)
    }
}

/// Checks a report against a saved export: the export itself first ([`verify_export`],
/// same public key; a filtered export anchored later than the report must carry the
/// consistency proof from the report's checkpoint), then the figures recomputed from its
/// lines. `open` is called once per pass over the file (two or three).
///
/// # Errors
///
/// [`ReportError::Export`] for an export that does not verify, [`ReportError::Events`] for
/// one that does not cover the report's checkpoint, and those of [`Recompute`].
pub fn check_with_export<R: BufRead>(
    report: &OpenedReport,
    key: &VerifierKey,
    mut open: impl FnMut() -> std::io::Result<R>,
) -> Result<(Checked, ExportSummary), ReportError> {
    let io = |e: std::io::Error| ReportError::Events(format!("reading the export: {e}"));
    let summary =
        verify_export(open().map_err(io)?, key, None).map_err(|e| ReportError::Export(e.to_string()))?;
    if summary.checkpoint_size < report.anchor.size {
        return Err(ReportError::Events(format!(
            "the export is anchored to a checkpoint of {} events, older than the report's {}",
            summary.checkpoint_size, report.anchor.size
        )));
    }
    if summary.checkpoint_size == report.anchor.size && summary.checkpoint_root != report.anchor.root {
        return Err(ReportError::Checkpoint(
            "the export's checkpoint has the report's size but another root".into(),
        ));
    }
    // A filtered export's lines are proven in the export's tree: a later one must be proven
    // to extend the report's (its `consistency_from`), or the two could come from forked
    // histories. An unfiltered export recomputes the report's root from its lines instead.
    if summary.filtered && summary.checkpoint_size > report.anchor.size {
        verify_export(open().map_err(io)?, key, Some(&report.anchor.note)).map_err(|e| {
            ReportError::Export(format!(
                "{e} (export the workspace with consistency_from={} to link it to the report's checkpoint)",
                report.anchor.size
            ))
        })?;
    }
    let covers =
        summary.last_seq.is_some_and(|last| last + 1 >= report.anchor.size) || report.anchor.size == 0;
    if !summary.filtered && (summary.first_seq.is_some_and(|first| first > 0) || !covers) {
        return Err(ReportError::Events(
            "an unfiltered export must hold every event from seq 0 to the report's checkpoint".into(),
        ));
    }
    if summary.filtered {
        let named = report.params.workspaces.as_ref().filter(|w| w.len() == 1).map(|w| w[0].as_str());
        if named.is_none() || summary.workspace.as_deref() != named {
            return Err(ReportError::Events(
                "a filtered export must be of the one workspace the report is about".into(),
            ));
        }
    }
    let mut recompute = Recompute::new(report);
    let mut reader = open().map_err(io)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let value: Value =
            serde_json::from_str(&line).map_err(|e| ReportError::Events(format!("export line: {e}")))?;
        if value.get("manifest").is_some() {
            break;
        }
        let raw = value
            .get("raw")
            .and_then(Value::as_str)
            .and_then(|r| STANDARD.decode(r).ok())
            .ok_or_else(|| ReportError::Events("an export line without `raw`".into()))?;
        recompute.push_raw(&raw)?;
    }
    let checked = if summary.filtered { recompute.finish()? } else { recompute.finish_complete()? };
    Ok((checked, summary))
}

/// Splits a C2SP tlog-tiles entry bundle into its entries (each a big-endian uint16 length,
/// then that many bytes).
///
/// # Errors
///
/// [`ReportError::Events`] if the bundle is cut inside an entry.
pub fn bundle_entries(mut bundle: &[u8]) -> Result<Vec<&[u8]>, ReportError> {
    let mut entries = Vec::new();
    while !bundle.is_empty() {
        let (len, rest) = bundle
            .split_at_checked(2)
            .ok_or_else(|| ReportError::Events("a truncated entry bundle".into()))?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| ReportError::Events("a truncated entry bundle".into()))?;
        entries.push(entry);
        bundle = rest;
    }
    Ok(entries)
}
