//! Usage credits as the API shows them (docs/credits.md): in a key view, and in the create
//! and top-up bodies.

use keyledger_ledger::credits::KeyCredits;
use serde::Serialize;
use utoipa::ToSchema;

/// A key's credits: the balance each allowed verification spends its `cost` from.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct CreditsView {
    pub remaining: u64,
    pub refill: Option<RefillView>,
    /// When the balance was last refilled (`null` before the first refill).
    pub refilled_at: Option<String>,
    /// `key.credits_low` fires when a spend takes the balance to this or below.
    pub low_threshold: u64,
}

/// At each boundary (UTC midnight; monthly: of day `day`, clamped to the month) the
/// balance is set to `amount`.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct RefillView {
    pub amount: u64,
    /// `daily` or `monthly`.
    pub interval: String,
    /// Day of the month of a monthly refill (1–31); `null` means 1.
    pub day: Option<u8>,
}

impl CreditsView {
    pub fn new(credits: &KeyCredits) -> Self {
        Self {
            remaining: credits.remaining,
            refill: credits.refill.as_ref().map(|r| RefillView {
                amount: r.amount,
                interval: r.interval.as_str().to_owned(),
                day: r.day,
            }),
            refilled_at: super::rfc3339(credits.refilled_at),
            low_threshold: credits.low_threshold,
        }
    }
}
