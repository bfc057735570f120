//! Usage credits over HTTP (docs/credits.md, docs/api.md "Credits"): the `credits` member
//! of a create body, the `cost` of a verification, and the top-up endpoint
//! `POST /v1/keys/{key_id}/credits`.
//!
//! Everything here only parses and bounds what a request says (every number at most
//! `MAX_CREDITS`, the refill's interval and day checked); the balance itself is decided on
//! the writer thread (`keyledger_ledger::credits`), so a refused request changes nothing.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::schema::{AuthorityErrors, ErrorBody, KeyNotFound, KeyView, Unavailable};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyledger_core::credits::MAX_CREDITS;
use keyledger_core::{Refill, RefillInterval, Timestamp};
use keyledger_ledger::credits::{CreditsChange, CreditsSpec};
use serde::Deserialize;

/// `credits` of a create body: `{"remaining", "refill"?: {"amount", "interval", "day"?},
/// "low_threshold"?}`.
#[derive(Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsBody {
    remaining: u64,
    refill: Option<RefillBody>,
    /// Default: 10% of the refill amount, or of `remaining` without a refill.
    low_threshold: Option<u64>,
}

#[derive(Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillBody {
    amount: u64,
    /// `daily` or `monthly`.
    interval: String,
    /// Day of the month of a monthly refill, 1–31 (clamped to the month's last day).
    day: Option<u8>,
}

fn at_most(field: &str, value: u64) -> Result<u64, ApiError> {
    if value > MAX_CREDITS {
        return Err(ApiError::invalid(field, format!("must be at most {MAX_CREDITS}")));
    }
    Ok(value)
}

impl CreditsBody {
    /// The validated credits of a new key, naming the first bad field.
    pub fn spec(self) -> Result<CreditsSpec, ApiError> {
        let remaining = at_most("credits.remaining", self.remaining)?;
        let refill = match self.refill {
            None => None,
            Some(r) => {
                let interval = RefillInterval::parse(&r.interval).ok_or_else(|| {
                    ApiError::invalid("credits.refill.interval", "must be `daily` or `monthly`")
                })?;
                let day = match (interval, r.day) {
                    (_, None) => None,
                    (RefillInterval::Daily, Some(_)) => {
                        return Err(ApiError::invalid(
                            "credits.refill.day",
                            "applies to monthly refills only",
                        ));
                    }
                    (RefillInterval::Monthly, Some(day @ 1..=31)) => Some(day),
                    (RefillInterval::Monthly, Some(_)) => {
                        return Err(ApiError::invalid("credits.refill.day", "must be between 1 and 31"));
                    }
                };
                Some(Refill { amount: at_most("credits.refill.amount", r.amount)?, interval, day })
            }
        };
        let low_threshold = self.low_threshold.map(|t| at_most("credits.low_threshold", t)).transpose()?;
        Ok(CreditsSpec { remaining, refill, low_threshold })
    }
}

/// A verification's `cost` as text (forward-auth `?cost=`, the `x-keyledger-cost` header, a
/// gRPC context extension): a whole number from 0 to `MAX_CREDITS`.
pub fn parse_cost(text: Option<&str>) -> Result<Option<u64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let cost = text.trim().parse::<u64>().ok().filter(|c| *c <= MAX_CREDITS);
    cost.map(Some)
        .ok_or_else(|| ApiError::invalid("cost", format!("must be a whole number from 0 to {MAX_CREDITS}")))
}

/// A verification's `cost` from a JSON body, bounded like [`parse_cost`].
pub fn check_cost(cost: Option<u64>) -> Result<Option<u64>, ApiError> {
    cost.map(|c| at_most("cost", c)).transpose()
}

/// A top-up: exactly one of `add` and `set`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Credits added to the balance (the key must have credits).
    add: Option<u64>,
    /// The new balance (gives credits to a key without any).
    set: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/credits",
    operation_id = "setKeyCredits",
    summary = "Top up a key's credits",
    tag = "keys",
    description = concat!(
        "Add to (`{\"add\": n}`) or set (`{\"set\": n}`) a key's credit balance (`ledger:keys:write`). ",
        "Appends a `credits_set` event (after a `credits_refilled` one if a refill was due). The ",
        "refill schedule is unchanged. Admin keys (`_ledger`) are never metered: 400."
    ),
    request_body = TopUp,
    params(("key_id" = String, Path, description = "Key id, `key_` + 26 characters")),
    responses(
        (status = 200, description = "The key, with its new balance", body = KeyView),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = "the key is revoked, or `add` to a key without credits (conflict)", body = ErrorBody)
    )
)]
pub async fn top_up(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    JsonBody(body): JsonBody<TopUp>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let key = crate::keys::visible_key(&state, &admin, &key_id)?;
    admin.allow(scope::KEYS_WRITE, &key.workspace)?;
    let change = match (body.add, body.set) {
        (Some(n), None) => CreditsChange::Add(at_most("add", n)?),
        (None, Some(n)) => CreditsChange::Set(at_most("set", n)?),
        _ => return Err(ApiError::invalid("add", "give exactly one of `add` and `set`")),
    };
    let (key, _) = state.engine.set_credits(admin.caller, key.key_id, change).await?;
    Ok((StatusCode::OK, Json(crate::key_view::of(&state, &key, Timestamp::now()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Result<CreditsSpec, String> {
        let body: CreditsBody = serde_json::from_str(text).map_err(|e| e.to_string())?;
        body.spec().map_err(|e| e.message)
    }

    #[test]
    fn credits_bodies_are_checked_field_by_field() {
        let spec =
            body(r#"{"remaining": 5, "refill": {"amount": 10, "interval": "monthly", "day": 31}}"#).unwrap();
        assert_eq!(spec.remaining, 5);
        assert_eq!(
            spec.refill,
            Some(Refill { amount: 10, interval: RefillInterval::Monthly, day: Some(31) })
        );
        assert!(body(r#"{"remaining": -1}"#).is_err());
        assert!(body(r#"{"remaining": 1.5}"#).is_err());
        assert!(body(r#"{"remaining": 1, "colour": 1}"#).is_err());
        assert!(
            body(&format!(r#"{{"remaining": {}}}"#, MAX_CREDITS + 1))
                .unwrap_err()
                .contains("credits.remaining")
        );
        assert!(
            body(r#"{"remaining": 1, "refill": {"amount": 1, "interval": "weekly"}}"#)
                .unwrap_err()
                .contains("interval")
        );
        assert!(
            body(r#"{"remaining": 1, "refill": {"amount": 1, "interval": "monthly", "day": 0}}"#)
                .unwrap_err()
                .contains("day")
        );
        assert!(
            body(r#"{"remaining": 1, "refill": {"amount": 1, "interval": "daily", "day": 3}}"#)
                .unwrap_err()
                .contains("day")
        );
    }

    #[test]
    fn costs_are_whole_bounded_numbers() {
        assert_eq!(parse_cost(None).unwrap(), None);
        assert_eq!(parse_cost(Some("0")).unwrap(), Some(0));
        assert_eq!(parse_cost(Some(" 7 ")).unwrap(), Some(7));
        for bad in ["-1", "1.5", "", "x", "99999999999999999999999"] {
            assert!(parse_cost(Some(bad)).is_err(), "{bad}");
        }
        assert!(check_cost(Some(MAX_CREDITS + 1)).is_err());
    }
}
