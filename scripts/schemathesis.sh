#!/usr/bin/env bash
# OpenAPI-driven API fuzzing: schemathesis against the real `keyledger` binary.
#
# Builds the binary, initialises a throwaway data dir, serves it on a free loopback port and
# runs schemathesis over every operation of /openapi.json with the init admin key as bearer
# auth, positive and negative data, checking that no answer is a 5xx and that every answer
# conforms to the document (documented status, content type, body schema, headers). Bounded:
# a few examples per operation, a fixed seed (SCHEMATHESIS_SEED to vary it), an overall
# timeout. Installs schemathesis itself into a venv (target/schemathesis-venv) if missing.
#
#   bash scripts/schemathesis.sh               # what CI runs
#   SCHEMATHESIS_EXAMPLES=200 SCHEMATHESIS_SEED=$RANDOM bash scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

examples=${SCHEMATHESIS_EXAMPLES:-25}
seed=${SCHEMATHESIS_SEED:-20241123}
budget=${SCHEMATHESIS_TIMEOUT_SECS:-900}
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
version=${SCHEMATHESIS_VERSION:-4.32.5}

source scripts/lib/serve.sh
serve_install_tool schemathesis.sh "$venv" schemathesis "$version"

cargo build --quiet --bin keyledger
bin=target/debug/keyledger

serve_start schemathesis.sh "$bin"

# Some keys for the operations that need existing ones (schemathesis mostly sends random ids;
# these make the positive paths reachable through the documented examples).
for ws in acme beta; do
    curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
        -d '{"name": "seed", "scopes": ["read"]}' "$base/v1/workspaces/$ws/keys" >/dev/null
done
# Schemathesis acts with an admin key of its own, limited to those two workspaces: it follows
# links to every key id it sees, and with the init key it found that key in `_ledger` and
# disabled it, after which every later call was a 401. A key that cannot see `_ledger` cannot
# lock itself out, so every operation (revoke-all included) runs in one pass.
fuzz_admin=$(curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
    -d '{"name": "schemathesis", "scopes": ["ledger:keys:read", "ledger:keys:write", "ledger:audit:read", "ledger:export", "ledger:admin"], "resources": ["acme", "beta"]}' \
    "$base/v1/workspaces/_ledger/keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')

# From the scratch dir, so schemathesis's own cache (.schemathesis/) stays out of the tree.
# The admin key goes in both documented credential headers: left to itself schemathesis fills
# `x-api-key` with random text, and two different keys in one request are refused (401), so
# the key-specific operations were only ever tested on their auth-failure path.
# One worker: with several, hypothesis's lambda descriptions call `ast.parse` from threads, and
# CPython 3.11's AST recursion-depth accounting is not thread-safe (cpython#106905: a spurious
# `SystemError: AST constructor recursion depth mismatch` that failed a CI run).
run() {
    (cd "$work" && timeout "$budget" "$root/$venv/bin/schemathesis" run "$base/openapi.json" \
        --header "Authorization: Bearer $fuzz_admin" \
        --header "x-api-key: $fuzz_admin" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
        --mode all \
        --phases examples,coverage,fuzzing \
        --max-examples "$examples" \
        --seed "$seed" \
        --request-timeout 20 \
        --workers 1 \
        --suppress-health-check all \
        --output-truncate true \
        "$@")
}
set +e
run --report junit --report-junit-path "$root/target/schemathesis-report/junit.xml"
status=$?
set -e
serve_finish "$status"
