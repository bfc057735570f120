//! Signed notes and checkpoints on arbitrary text: `note::open` (against keyledger's fixed
//! fuzzing key and a bare form of it), `Checkpoint::parse_body` (accepted bodies round-trip)
//! and `VerifierKey::from_str` (accepted keys print back to an equal key). Never panics.
#![no_main]

use keyledger_verify::note::{Checkpoint, VerifierKey, open, open_checkpoint};
use libfuzzer_sys::fuzz_target;
use std::str::FromStr;
use std::sync::LazyLock;

/// The public key of the throwaway data dir the seed corpora were made with.
const KEY: &str = "keyledger/4df7cd794ca50632+6cd666bd+AcoVpy3siuqvNQ6qQdaY9B/VTdhroxELWcpFQ3uX0/qA";

static NAMED: LazyLock<VerifierKey> = LazyLock::new(|| KEY.parse().expect("the fixed key parses"));
static BARE: LazyLock<VerifierKey> =
    LazyLock::new(|| VerifierKey::bare(*NAMED.public_key()).expect("the fixed key is not weak"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for key in [&*NAMED, &*BARE] {
        if let Ok(body) = open(text, key) {
            assert!(text.starts_with(&body) && body.ends_with('\n'));
        }
        let _ = open_checkpoint(text, key);
    }
    if let Ok(checkpoint) = Checkpoint::parse_body(text) {
        assert_eq!(checkpoint.body(), text, "an accepted checkpoint body does not round-trip");
    }
    if let Ok(key) = VerifierKey::from_str(text) {
        let shown = key.to_string();
        assert_eq!(VerifierKey::from_str(&shown).as_ref(), Ok(&key), "{shown}");
    }
});
