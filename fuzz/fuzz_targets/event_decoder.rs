//! `decode_event` on arbitrary bytes: never panics, and whatever it accepts re-encodes to
//! exactly the input (one valid encoding per event) and renders as JSON.
#![no_main]

use keyledger_core::json::event_json;
use keyledger_core::{decode_event, encode_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode_event(data) {
        assert_eq!(encode_event(&event), data, "an accepted event does not re-encode to its input");
        let _ = event_json(&event);
    }
});
