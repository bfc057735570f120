//! `verify_export` on arbitrary bytes with a fixed public key, with and without a trusted
//! checkpoint: never panics (the seeds are real, valid exports signed by that key).
#![no_main]

use keyledger_verify::export::verify_export;
use keyledger_verify::note::VerifierKey;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The public key of the throwaway data dir the seed corpora were made with.
const KEY: &str = "keyledger/4df7cd794ca50632+6cd666bd+AcoVpy3siuqvNQ6qQdaY9B/VTdhroxELWcpFQ3uX0/qA";

/// A checkpoint of that log (8 events), signed by that key.
const TRUSTED: &str = "keyledger/4df7cd794ca50632\n8\nQaUmVjKETN5sQcfdvxvvL8pNscs6J4rtVbqq2RaJuhM=\n\n\u{2014} keyledger/4df7cd794ca50632 bNZmveQOmgQzyyjm1S4QSHzH7pCTOXbgE+t230qwFvTcBtN2EmhpAiRhrEw9qHTOJxbuPcjy8oE8Ij+ues5qzYH7VA0=\n";

static PUBLIC: LazyLock<VerifierKey> = LazyLock::new(|| KEY.parse().expect("the fixed key parses"));

fuzz_target!(|data: &[u8]| {
    let untrusted = verify_export(data, &PUBLIC, None);
    let trusted = verify_export(data, &PUBLIC, Some(TRUSTED));
    if let Ok(summary) = &trusted {
        assert_eq!(untrusted.as_ref().ok().map(|s| s.lines), Some(summary.lines));
    }
});
