//! The key view every route answers. `KeyView::new` is a pure function of the registry's
//! record; what the registry holds beside the record (the key's credits, the rate limits it
//! is under, what an import left) is added here. Key routes, import, the top-up, request
//! traces, hygiene and the compromise report all build their views through this one place,
//! so none of them shows a key with a control missing (docs/api.md, "Keys").

use crate::AppState;
use crate::schema::{CreditsView, KeyView};
use keyledger_core::{KeyId, Timestamp};
use keyledger_ledger::KeyRecord;

/// The whole view of `record` at `now`.
pub fn of(state: &AppState, record: &KeyRecord, now: Timestamp) -> KeyView {
    complete(state, KeyView::new(record, now), &record.key_id)
}

/// `view` (of the key `key_id`, built from its record) with the key's credits, rate limits
/// and import marks as the registry holds them now.
pub fn complete(state: &AppState, view: KeyView, key_id: &KeyId) -> KeyView {
    let view = crate::import::with_import(state, view, key_id);
    let (ratelimits, ratelimits_from) = crate::key_ratelimits::of_key(state, key_id, &view.workspace);
    KeyView {
        credits: state.engine.credits(key_id).as_ref().map(CreditsView::new),
        ratelimits,
        ratelimits_from,
        ..view
    }
}
