//! `Secret::check` / `Secret::parse` on arbitrary text: never panics; what it accepts has the
//! contract's shape, and the hint of an accepted secret never shows its body.
#![no_main]

use keyledger_core::secret::{BODY_LEN, CHECK_LEN};
use keyledger_core::{KeyPrefix, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = Secret::check(text);
    let parsed = Secret::parse(text);
    assert_eq!(checked.is_ok(), parsed.is_ok());
    if let (Ok(shape), Ok(secret)) = (checked, parsed) {
        assert!(shape.prefix.parse::<KeyPrefix>().is_ok());
        let head = format!("{}_{}_", shape.prefix, shape.environment);
        assert!(text.starts_with(&head));
        assert_eq!(text.len(), head.len() + BODY_LEN + CHECK_LEN);
        assert_eq!(secret.expose(), text);
        let hint = secret.hint();
        assert!(hint.starts_with(&head) && hint.ends_with(&text[text.len() - 4..]));
        assert!(!hint.contains(&text[head.len()..head.len() + BODY_LEN]));
        assert!(!format!("{secret:?}{secret}").contains(&text[head.len()..]));
    }
});
