//! Checking a witness cosignature with an implementation nobody here wrote: Python's
//! `cryptography` (what tests/witness.rs and tests/witnessed_log.rs cross-check
//! keyledger-verify against; docs/witness.md).

use std::process::Command;

/// Checks a cosignature line with Python's `cryptography`: the key id from the vkey, and
/// Ed25519 over `cosignature/v1\ntime <t>\n` + the checkpoint text.
pub fn python_verifies(vkey: &str, note: &str, line: &str) {
    const SCRIPT: &str = r#"
import base64, hashlib, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
vkey, note, line = sys.argv[1], sys.argv[2], sys.argv[3]
name, key_id_hex, typed_b64 = vkey.split("+", 2)
typed = base64.b64decode(typed_b64, validate=True)
assert typed[0] == 4
assert hashlib.sha256(name.encode() + b"\n" + typed).digest()[:4].hex() == key_id_hex
text = note[: note.index("\n\n") + 1].encode()
blob = base64.b64decode(line.removeprefix("\u2014 " + name + " ").removesuffix("\n"), validate=True)
assert blob[:4].hex() == key_id_hex and len(blob) == 76
(ts,) = struct.unpack(">Q", blob[4:12])
assert ts > 0
Ed25519PublicKey.from_public_bytes(typed[1:]).verify(blob[12:], b"cosignature/v1\ntime %d\n" % ts + text)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, vkey, note, line])
        .output()
        .expect("python3 must be installed: cosignatures are cross-checked with Python's cryptography");
    assert!(
        out.status.success(),
        "python rejected the cosignature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
