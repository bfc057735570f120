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

if ! "$venv/bin/openapi-python-client" --version 2>/dev/null | grep -q "$version"; then
    echo "openapi-client.sh: installing openapi-python-client $version into $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's python3 lacks venv until python3-venv is installed (CI runs as root).
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "openapi-python-client==$version"
fi

# KEYLEDGER_BIN: a binary built already (tests/openapi_client.rs passes the one it built).
bin=${KEYLEDGER_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet --bin keyledger
    bin=target/debug/keyledger
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" init --data-dir "$work/data" >"$work/init.json"
admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_key"])' "$work/init.json")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --log-format json >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$work/serve.log"; echo "openapi-client.sh: the server died" >&2; exit 1; fi
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null
curl -fsS "$base/openapi.json" >"$work/openapi.json"

# From the scratch dir, so nothing the generator writes lands in the tree.
(cd "$work" && PATH="$root/$venv/bin:$PATH" "$root/$venv/bin/openapi-python-client" generate \
    --path openapi.json --output-path client --overwrite --fail-on-warning)

set +e
PYTHONPATH="$work/client" KEYLEDGER_URL="$base" KEYLEDGER_ADMIN_KEY="$admin" \
    "$venv/bin/python" scripts/openapi_client_flow.py
status=$?
set -e
if ! kill -0 "$server" 2>/dev/null; then
    echo "openapi-client.sh: the server is gone (crashed?); its log:" >&2
    tail -50 "$work/serve.log" >&2
    exit 1
fi
if grep -q '"level":"ERROR"' "$work/serve.log"; then
    echo "openapi-client.sh: the server logged errors:" >&2
    grep '"level":"ERROR"' "$work/serve.log" | head -20 >&2
    status=1
fi
exit "$status"
