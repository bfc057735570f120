//! A client generated from `/openapi.json` by an off-the-shelf generator drives the real
//! binary: `scripts/openapi-client.sh` generates a Python client with
//! `openapi-python-client` (failing on any generator warning) and runs
//! `scripts/openapi_client_flow.py` through it: create, verify (JSON and forward-auth mode),
//! rotate, revoke, verify again (401 `invalid_api_key`), compromise report. See docs/api.md,
//! "OpenAPI document and generated clients".
//!
//! Needs `python3` with `venv` and the package registry for the first run (the script
//! installs the generator into `target/openapi-client-venv`, then reuses it).

use keyledger_e2e::{keyledger_bin, workspace_root};
use std::process::Command;

#[test]
fn a_generated_client_drives_create_verify_rotate_revoke_and_the_compromise_report() {
    let bin = keyledger_bin();
    let root = workspace_root();
    let output = Command::new("bash")
        .arg(root.join("scripts/openapi-client.sh"))
        .current_dir(&root)
        .env("KEYLEDGER_BIN", bin)
        .output()
        .expect("bash runs scripts/openapi-client.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/openapi-client.sh failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("openapi_client_flow: ok"),
        "the flow did not run to its end:\n{stdout}\n{stderr}"
    );
}
