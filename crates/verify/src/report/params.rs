//! What a compliance report was asked for (docs/compliance.md, "Parameters"): the
//! workspaces, the period `[from, to)`, the instant `as_of` at which ages and "unused"
//! are measured, and the unused threshold in days.
//!
//! The parameters are part of the signed report, so the verifier folds the events with
//! exactly the parameters the producer used; [`Parameters::from_json`] is strict, so a
//! report whose parameters were edited either fails to parse or fails to recompute.

use super::ReportError;
use keyledger_core::{Event, Timestamp, WorkspaceId};
use serde_json::{Value, json};

/// The longest period a report covers: a year and a day, so the per-day tables and charts
/// stay bounded.
pub const MAX_PERIOD_DAYS: i64 = 367;
/// The default unused threshold (days).
pub const DEFAULT_UNUSED_DAYS: u32 = 90;
/// The largest unused threshold accepted (days).
pub const MAX_UNUSED_DAYS: u32 = 3650;
/// The most workspaces one report may name.
pub const MAX_WORKSPACES: usize = 1000;

/// Microseconds in a day.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// The parameters of one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    /// The workspaces reported on, sorted; `None` is the whole ledger.
    pub workspaces: Option<Vec<WorkspaceId>>,
    /// Start of the period (inclusive).
    pub from: Timestamp,
    /// End of the period (exclusive): no event at or after it is folded.
    pub to: Timestamp,
    /// When ages, "unused" and expiry are measured: `to`, or the production time when the
    /// period has not ended yet. Never after `to`.
    pub as_of: Timestamp,
    /// A key whose last use is more than this many days before `as_of` is "unused".
    pub unused_days: u32,
}

impl Parameters {
    /// Checks the period and the threshold, sorts and dedups the workspaces.
    ///
    /// # Errors
    ///
    /// [`ReportError::Parameters`] naming the offending parameter.
    pub fn new(
        workspaces: Option<Vec<WorkspaceId>>,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
        unused_days: u32,
    ) -> Result<Self, ReportError> {
        if to <= from {
            return Err(ReportError::Parameters("`to` must be after `from`".into()));
        }
        if to.micros().saturating_sub(from.micros()) > MAX_PERIOD_DAYS * DAY_MICROS {
            return Err(ReportError::Parameters(format!("the period may be at most {MAX_PERIOD_DAYS} days")));
        }
        if unused_days == 0 || unused_days > MAX_UNUSED_DAYS {
            return Err(ReportError::Parameters(format!("`unused_days` must be 1 to {MAX_UNUSED_DAYS}")));
        }
        if from > now {
            return Err(ReportError::Parameters("`from` is in the future".into()));
        }
        let workspaces = workspaces.map(|mut list| {
            list.sort();
            list.dedup();
            list
        });
        if workspaces.as_ref().is_some_and(|w| w.is_empty() || w.len() > MAX_WORKSPACES) {
            return Err(ReportError::Parameters(format!("name 1 to {MAX_WORKSPACES} workspaces")));
        }
        Ok(Self { workspaces, from, to, as_of: to.min(now), unused_days })
    }

    /// Whether the report covers the event's workspace.
    pub fn covers(&self, event: &Event) -> bool {
        match &self.workspaces {
            None => true,
            Some(list) => list.binary_search(event.payload.workspace()).is_ok(),
        }
    }

    /// The JSON form, as the report carries it.
    pub fn to_json(&self) -> Value {
        json!({
            "workspaces": self.workspaces.as_ref().map(|l| l.iter().map(|w| w.as_str()).collect::<Vec<_>>()),
            "from": self.from.to_rfc3339(),
            "to": self.to.to_rfc3339(),
            "as_of": self.as_of.to_rfc3339(),
            "unused_days": self.unused_days,
        })
    }

    /// Reads the JSON form back, strictly (exactly these members, canonical times).
    ///
    /// # Errors
    ///
    /// [`ReportError::Malformed`] for anything but what [`Parameters::to_json`] writes.
    pub fn from_json(value: &Value) -> Result<Self, ReportError> {
        let bad = |what: &str| ReportError::Malformed(format!("parameters: {what}"));
        let object = value.as_object().ok_or_else(|| bad("not an object"))?;
        if object.len() != 5 {
            return Err(bad("expected exactly workspaces, from, to, as_of, unused_days"));
        }
        let time = |name: &str| {
            let text = object.get(name).and_then(Value::as_str).ok_or_else(|| bad(name))?;
            let at = Timestamp::parse_rfc3339(text).ok_or_else(|| bad(name))?;
            if at.to_rfc3339() != text {
                return Err(bad(&format!("`{name}` is not in canonical form")));
            }
            Ok(at)
        };
        let (from, to, as_of) = (time("from")?, time("to")?, time("as_of")?);
        let unused_days = object
            .get("unused_days")
            .and_then(Value::as_u64)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| bad("unused_days"))?;
        let workspaces = match object.get("workspaces") {
            Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|w| {
                        w.as_str()
                            .and_then(|w| w.parse::<WorkspaceId>().ok())
                            .ok_or_else(|| bad("workspaces"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => return Err(bad("workspaces")),
        };
        let checked =
            Self::new(workspaces.clone(), from, to, as_of, unused_days).map_err(|e| bad(&e.to_string()))?;
        if checked.workspaces != workspaces || checked.as_of != as_of {
            return Err(bad("workspaces not sorted, or `as_of` after `to`"));
        }
        Ok(checked)
    }
}
