//! The admin client's side of usage credits (docs/credits.md): `keys create --credits N
//! --refill AMOUNT/INTERVAL[/DAY]`, `keys credits KEY --add N | --set N`, and the credits
//! line of a key's details.
//!
//! Only the shapes are checked here (whole numbers, a known interval); the server checks
//! the bounds and answers with the field it refuses.

use serde_json::{Value, json};

/// Parses `--refill AMOUNT/INTERVAL[/DAY]`, e.g. `10000/monthly` or `500/monthly/15` or
/// `100/daily`, into the create body's `refill` object.
pub fn refill(text: &str) -> Result<Value, String> {
    let usage = || format!("`{text}` is not AMOUNT/daily or AMOUNT/monthly[/DAY], e.g. 10000/monthly");
    let mut parts = text.split('/');
    let amount: u64 = parts.next().and_then(|a| a.trim().parse().ok()).ok_or_else(usage)?;
    let interval =
        parts.next().map(str::trim).filter(|i| *i == "daily" || *i == "monthly").ok_or_else(usage)?;
    let day = match parts.next() {
        None => None,
        Some(day) if interval == "monthly" => {
            Some(day.trim().parse::<u8>().ok().filter(|d| (1..=31).contains(d)).ok_or_else(usage)?)
        }
        Some(_) => return Err(usage()),
    };
    if parts.next().is_some() {
        return Err(usage());
    }
    let mut refill = json!({"amount": amount, "interval": interval});
    if let Some(day) = day {
        refill["day"] = json!(day);
    }
    Ok(refill)
}

/// The create body's `credits` member, if `--credits` was given.
pub fn create_member(credits: Option<u64>, refill: Option<Value>) -> Option<Value> {
    let mut member = json!({"remaining": credits?});
    if let Some(refill) = refill {
        member["refill"] = refill;
    }
    Some(member)
}

/// The top-up body: `{"add": n}` or `{"set": n}`.
pub fn top_up_body(add: Option<u64>, set: Option<u64>) -> Value {
    match (add, set) {
        (Some(n), _) => json!({"add": n}),
        (None, n) => json!({"set": n}),
    }
}

/// The `credits` line of a key's details: `N left (refilled to A daily|monthly)`, or `None`
/// for a key without credits.
pub fn detail(key: &Value) -> Option<String> {
    let credits = key.get("credits").filter(|c| c.is_object())?;
    let remaining = credits["remaining"].as_u64().unwrap_or(0);
    let refill = &credits["refill"];
    Some(match (refill["amount"].as_u64(), refill["interval"].as_str()) {
        (Some(amount), Some(interval)) => format!("{remaining} left (refilled to {amount} {interval})"),
        _ => format!("{remaining} left"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_parse_or_name_the_expected_form() {
        assert_eq!(refill("10000/monthly").unwrap(), json!({"amount": 10000, "interval": "monthly"}));
        assert_eq!(refill("5/monthly/15").unwrap(), json!({"amount": 5, "interval": "monthly", "day": 15}));
        assert_eq!(refill("100/daily").unwrap(), json!({"amount": 100, "interval": "daily"}));
        for bad in
            ["", "10", "x/daily", "10/weekly", "10/daily/3", "10/monthly/32", "10/monthly/1/2", "-1/daily"]
        {
            assert!(refill(bad).unwrap_err().contains("AMOUNT/daily"), "{bad}");
        }
    }

    #[test]
    fn bodies_and_details() {
        assert_eq!(create_member(None, None), None);
        let refill = refill("10/daily").ok();
        assert_eq!(
            create_member(Some(3), refill).unwrap(),
            json!({"remaining": 3, "refill": {"amount": 10, "interval": "daily"}})
        );
        assert_eq!(top_up_body(Some(2), None), json!({"add": 2}));
        assert_eq!(top_up_body(None, Some(0)), json!({"set": 0}));
        let key =
            json!({"credits": {"remaining": 7, "refill": {"amount": 10, "interval": "daily", "day": null}}});
        assert_eq!(detail(&key).unwrap(), "7 left (refilled to 10 daily)");
        assert_eq!(detail(&json!({"credits": null})), None);
    }
}
