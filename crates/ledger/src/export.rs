//! The producer of exports (format in docs/export-format.md).
//!
//! [`ExportPlan::prepare`] takes a signed checkpoint covering everything appended so far
//! (the *anchor*; with witnesses, one they cosigned, waited for within a bound), resolves
//! the requested range to seqs inside it, and
//! [`ExportPlan::write`] streams the export into any [`std::io::Write`], one event at a
//! time: memory stays constant whatever the range. The JSONL form is verified offline by
//! [`keyledger_verify::export::verify_export`], which shares its line and manifest
//! encoding with this module; the CSV form is a flat, unsigned convenience.

use crate::engine::Engine;
use crate::error::LedgerError;
use keyledger_core::json::{actor_text, event_json};
use keyledger_core::{Event, Timestamp, WorkspaceId};
use keyledger_log::checkpoint::StoredCheckpoint;
use keyledger_log::tree::TreeError;
use keyledger_log::{LogReader, OpenError};
use keyledger_verify::export::{
    FORMAT_VERSION, LinesHasher, TREE_HASH_MEMBER, hashes_json, line_value, manifest_line, sign_manifest,
    write_event_line,
};
use keyledger_verify::note::NoteSigner;
use serde_json::{Value, json};
use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

/// One end of an export range: a seq, or an instant (the first event at or after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Seq(u64),
    Time(Timestamp),
}

impl FromStr for Bound {
    type Err = String;

    /// A decimal integer is a seq; anything else must be an RFC 3339 time.
    fn from_str(text: &str) -> Result<Self, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Bound::Seq).map_err(|_| "is too large for a seq".into());
        }
        Timestamp::parse_rfc3339(text)
            .map(Bound::Time)
            .ok_or_else(|| "must be a seq (integer) or an RFC 3339 time".into())
    }
}

impl Bound {
    /// As the manifest's `filters` records it: a number, or a normalised RFC 3339 string.
    pub fn to_json(self) -> Value {
        match self {
            Bound::Seq(seq) => json!(seq),
            Bound::Time(at) => json!(at.to_rfc3339()),
        }
    }

    /// The first seq the bound admits, within a tree of `size` events.
    fn resolve(self, log: &LogReader, size: u64) -> Result<u64, OpenError> {
        Ok(match self {
            Bound::Seq(seq) => seq.min(size),
            Bound::Time(at) => log.seq_at_or_after(at)?.min(size),
        })
    }
}

/// The two export formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// Signed, verifiable JSON Lines.
    #[default]
    Jsonl,
    /// A flat, unsigned table for spreadsheets.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            _ => Err("must be `jsonl` or `csv`".into()),
        }
    }
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// What to export. `from` is inclusive, `to` exclusive; both optional.
#[derive(Clone, Debug, Default)]
pub struct ExportRequest {
    pub from: Option<Bound>,
    pub to: Option<Bound>,
    pub workspace: Option<WorkspaceId>,
    pub format: ExportFormat,
    /// Also prove that the anchor extends the checkpoint of this size.
    pub consistency_from: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("`consistency_from` {size} is beyond the anchor checkpoint of {anchor} events")]
    ConsistencyFromTooLarge { size: u64, anchor: u64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Log(#[from] OpenError),
    #[error("the log's tree: {0}")]
    Tree(String),
    #[error("the log skips from seq {expected} to {found}")]
    Gap { expected: u64, found: u64 },
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

impl From<TreeError> for ExportError {
    fn from(error: TreeError) -> Self {
        ExportError::Tree(error.to_string())
    }
}

fn tree_err(error: impl std::fmt::Display) -> ExportError {
    ExportError::Tree(error.to_string())
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

/// A resolved export: the anchor, the seq range `[start, end)` inside it, and the key.
pub struct ExportPlan {
    pub request: ExportRequest,
    pub anchor: StoredCheckpoint,
    pub origin: String,
    pub start: u64,
    pub end: u64,
    signer: Arc<NoteSigner>,
}

impl ExportPlan {
    /// Signs (if needed) a checkpoint covering every event so far and resolves the range.
    /// With witnesses configured, first waits (bounded) for their cosignatures of it (see
    /// [`Engine::witnessed_checkpoint_now`]).
    pub async fn prepare(engine: &Engine, request: ExportRequest) -> Result<Self, ExportError> {
        let anchor = engine.witnessed_checkpoint_now().await?;
        Self::new(engine.log(), engine.signer().clone(), anchor, request)
    }

    /// Resolves `request` against an anchor checkpoint of `log`.
    pub fn new(
        log: &LogReader,
        signer: Arc<NoteSigner>,
        anchor: StoredCheckpoint,
        request: ExportRequest,
    ) -> Result<Self, ExportError> {
        let size = anchor.size;
        if let Some(m) = request.consistency_from
            && m > size
        {
            return Err(ExportError::ConsistencyFromTooLarge { size: m, anchor: size });
        }
        let start = request.from.map(|b| b.resolve(log, size)).transpose()?.unwrap_or(0);
        let end = request.to.map(|b| b.resolve(log, size)).transpose()?.unwrap_or(size).max(start);
        let origin = log.verifier().name().unwrap_or_default().to_owned();
        Ok(Self { request, anchor, origin, start, end, signer })
    }

    /// The events of the range that pass the workspace filter, in seq order, each with its
    /// stored bytes.
    fn events<'a>(
        &'a self,
        log: &'a LogReader,
    ) -> impl Iterator<Item = Result<(Event, Vec<u8>), ExportError>> + 'a {
        let mut expected = self.start;
        log.records_from(self.start)
            .map(move |record| {
                let (event, raw) = record?;
                if event.seq != expected {
                    return Err(ExportError::Gap { expected, found: event.seq });
                }
                expected += 1;
                Ok((event, raw))
            })
            .take_while(|r| r.as_ref().map_or(true, |(e, _)| e.seq < self.end))
            .filter(|r| match (r, &self.request.workspace) {
                (Ok((event, _)), Some(ws)) => event.payload.workspace() == ws,
                _ => true,
            })
    }

    /// Streams the export in the requested format into `out`.
    pub fn write(&self, log: &LogReader, out: impl Write) -> Result<ExportStats, ExportError> {
        match self.request.format {
            ExportFormat::Jsonl => self.write_jsonl(log, out),
            ExportFormat::Csv => self.write_csv(log, out),
        }
    }

    fn write_jsonl(&self, log: &LogReader, mut out: impl Write) -> Result<ExportStats, ExportError> {
        let size = self.anchor.size;
        let tree = log.tree();
        let filtered = self.request.workspace.is_some();
        let mut hasher = LinesHasher::new();
        let mut stats = ExportStats::default();
        let mut first_at = None;
        let mut last_at = None;
        let mut line = String::new();
        for record in self.events(log) {
            // The stored record; decoding accepted only the canonical encoding, so it is
            // exactly what `encode_event` writes for this event.
            let (event, raw) = record?;
            let proof =
                if filtered { Some(tree.inclusion_proof(event.seq, size).map_err(tree_err)?) } else { None };
            line.clear();
            write_event_line(&event, &raw, proof.as_deref(), log.tree_hash(), &mut line);
            line.push('\n');
            hasher.update(line.as_bytes());
            out.write_all(line.as_bytes())?;
            stats.lines += 1;
            stats.first_seq.get_or_insert(event.seq);
            stats.last_seq = Some(event.seq);
            first_at.get_or_insert(event.at);
            last_at = Some(event.at);
        }
        let range_proof = match (filtered, stats.first_seq, stats.last_seq) {
            (false, Some(first), Some(last)) => json!({
                "left_peaks": hashes_json(&tree.peaks(first)?),
                "consistency": hashes_json(&tree.consistency_proof(last + 1, size).map_err(tree_err)?),
            }),
            _ => Value::Null,
        };
        let edges = if !filtered && self.has_time_bound() {
            Some(json!({
                "before": self.neighbour(log, self.start.checked_sub(1))?,
                "after": self.neighbour(log, (self.end < size).then_some(self.end))?,
            }))
        } else {
            None
        };
        let consistency_from = match self.request.consistency_from {
            Some(m) => json!({
                "size": m,
                "proof": hashes_json(&tree.consistency_proof(m, size).map_err(tree_err)?),
            }),
            None => Value::Null,
        };
        let time = |t: Option<Timestamp>| t.map_or(Value::Null, |t| json!(t.to_rfc3339()));
        let bound = |b: Option<Bound>| b.map_or(Value::Null, Bound::to_json);
        let manifest = json!({
            "version": FORMAT_VERSION,
            "origin": self.origin,
            TREE_HASH_MEMBER: log.tree_hash().name(),
            "range": {
                "first_seq": stats.first_seq,
                "last_seq": stats.last_seq,
                "from": time(first_at),
                "to": time(last_at),
            },
            "filters": {
                "workspace": self.request.workspace.as_ref().map(|w| w.as_str()),
                "from": bound(self.request.from),
                "to": bound(self.request.to),
            },
            "filtered": filtered,
            "lines": stats.lines,
            "lines_hash": hex::encode(hasher.finalize()),
            "checkpoint": {
                // Verbatim, with any witness cosignature lines the anchor carries
                // (docs/export-format.md, "Witness cosignatures").
                "note": self.anchor.note,
                "size": size,
                "root_hash": hex::encode(self.anchor.root),
            },
            "range_proof": range_proof,
            "consistency_from": consistency_from,
        });
        let Value::Object(mut manifest) = manifest else {
            return Err(ExportError::Tree("manifest is not an object".into()));
        };
        if let Some(edges) = edges {
            manifest.insert("edges".into(), edges);
        }
        sign_manifest(&mut manifest, &self.signer);
        let mut line = manifest_line(manifest);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(stats)
    }

    /// Whether `from` or `to` is a time: the server resolved it, so the manifest carries
    /// the events just outside the range to prove it did so rightly.
    fn has_time_bound(&self) -> bool {
        [self.request.from, self.request.to].iter().any(|b| matches!(b, Some(Bound::Time(_))))
    }

    /// The event at `seq` as a range edge of the manifest (`null` for `None`): its line
    /// form with an inclusion proof in the anchor's tree (docs/export-format.md, section 5).
    fn neighbour(&self, log: &LogReader, seq: Option<u64>) -> Result<Value, ExportError> {
        let Some(seq) = seq else {
            return Ok(Value::Null);
        };
        let (event, raw) = match log.records_from(seq).next() {
            Some(record) => record?,
            None => return Err(ExportError::Gap { expected: seq, found: log.len() }),
        };
        if event.seq != seq {
            return Err(ExportError::Gap { expected: seq, found: event.seq });
        }
        let proof = log.tree().inclusion_proof(seq, self.anchor.size).map_err(tree_err)?;
        Ok(line_value(&event, &raw, Some(&proof), log.tree_hash()))
    }

    fn write_csv(&self, log: &LogReader, mut out: impl Write) -> Result<ExportStats, ExportError> {
        let mut stats = ExportStats::default();
        out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
        out.write_all(b"\r\n")?;
        let mut row = String::new();
        for record in self.events(log) {
            let (event, _) = record?;
            csv_row(&event, &mut row);
            out.write_all(row.as_bytes())?;
            stats.lines += 1;
            stats.first_seq.get_or_insert(event.seq);
            stats.last_seq = Some(event.seq);
        }
        out.flush()?;
        Ok(stats)
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 12] = [
    "seq",
    "at",
    "kind",
    "workspace",
    "key_id",
    "actor",
    "request_id",
    "ip",
    "user_agent",
    "method",
    "path",
    "reason",
];

/// One CSV record (RFC 4180, CRLF-terminated) of an event into `row`.
pub fn csv_row(event: &Event, row: &mut String) {
    let value = event_json(event);
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let context = value.get("context");
    let field = |name: &str| text(context.and_then(|c| c.get(name)));
    let cells = [
        event.seq.to_string(),
        event.at.to_rfc3339(),
        text(value.get("kind")),
        text(value.get("workspace")),
        text(value.get("key_id")),
        actor_text(&event.actor),
        event.request_id.to_string(),
        field("ip"),
        field("user_agent"),
        field("method"),
        field("path"),
        text(value.get("reason")),
    ];
    row.clear();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            row.push(',');
        }
        push_csv_cell(cell, row);
    }
    row.push_str("\r\n");
}

/// A CSV cell: a leading `=`, `+`, `-`, `@`, tab or CR (a spreadsheet formula) gets a `'`
/// prefix; a cell with a comma, quote, CR, LF or outer space is quoted, quotes doubled.
fn push_csv_cell(cell: &str, row: &mut String) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote =
        formula || cell.contains([',', '"', '\r', '\n']) || cell.starts_with(' ') || cell.ends_with(' ');
    if quote {
        row.push('"');
    }
    if formula {
        row.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            row.push('"');
        }
        row.push(c);
    }
    if quote {
        row.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_seqs_and_times() {
        assert_eq!("42".parse::<Bound>(), Ok(Bound::Seq(42)));
        assert!(matches!("2024-01-02T03:04:05Z".parse::<Bound>(), Ok(Bound::Time(_))));
        assert!("-1".parse::<Bound>().is_err());
        assert!("".parse::<Bound>().is_err());
        assert!("99999999999999999999999".parse::<Bound>().is_err());
        assert_eq!(
            "2024-01-02T05:04:05+02:00".parse::<Bound>().unwrap().to_json(),
            json!("2024-01-02T03:04:05.000000Z")
        );
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        let cell = |s: &str| {
            let mut row = String::new();
            push_csv_cell(s, &mut row);
            row
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("@sum"), "\"'@sum\"");
        assert_eq!(cell(" pad"), "\" pad\"");
    }
}
