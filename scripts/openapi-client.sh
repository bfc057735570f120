#!/usr/bin/env bash
# A client generated from /openapi.json drives the API (docs/api.md, "OpenAPI document and
# generated clients").
#
# Builds the binary, initialises a throwaway data dir, serves it on a free loopback port,
# fetches /openapi.json, generates a Python client from it with the off-the-shelf
# `openapi-python-client` (failing on any warning: a document problem is fixed in the
# document, not hidden by the generator's flags), then runs scripts/openapi_client_flow.py,
# which uses only the generated package to create, verify, rotate and revoke a key and read
# its compromise report, asserting on every answer. Exits non-zero on any problem.
# Installs the generator itself into a venv (target/openapi-client-venv) if missing.
#
#   bash scripts/openapi-client.sh       # what tests/openapi_client.rs runs
#   OPENAPI_PYTHON_CLIENT_VERSION=0.29.1 OPENAPI_CLIENT_VENV=target/openapi-client-venv \
#   KEYLEDGER_BIN=target/debug/keyledger bash scripts/openapi-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv=${OPENAPI_CLIENT_VENV:-target/openapi-client-venv}
version=${OPENAPI_PYTHON_CLIENT_VERSION:-0.29.1}

source scripts/lib/serve.sh
serve_install_tool openapi-client.sh "$venv" openapi-python-client "$version"

# KEYLEDGER_BIN: a binary built already (tests/openapi_client.rs passes the one it built).
bin=${KEYLEDGER_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet --bin keyledger
    bin=target/debug/keyledger
fi

serve_start openapi-client.sh "$bin"
curl -fsS "$base/openapi.json" >"$work/openapi.json"

# From the scratch dir, so nothing the generator writes lands in the tree.
(cd "$work" && PATH="$root/$venv/bin:$PATH" "$root/$venv/bin/openapi-python-client" generate \
    --path openapi.json --output-path client --overwrite --fail-on-warning)

set +e
PYTHONPATH="$work/client" KEYLEDGER_URL="$base" KEYLEDGER_ADMIN_KEY="$admin" \
    "$venv/bin/python" scripts/openapi_client_flow.py
status=$?
set -e
serve_finish "$status"
