#!/usr/bin/env bash
# The instruction profile of the verify path (docs/benchmarks.md, "Third pass"): runs
# `keyledger serve` (a release binary: line tables are in the release profile) under
# callgrind, creates 200 keys, warms up with 800 JSON-mode and 800 forward-auth
# verifications, then counts 4,000 requests per mode (JSON verify, forward-auth verify,
# GET /healthz) from 16 keep-alive clients, each mode in its own dump (counters zeroed
# before, every thread of the server included). An audit read before the zeroing and
# before the dump waits for the projections, so a dump holds the folding of its own mode's
# events and no other's. Prints instructions per request, in all and for the projector and
# log-writer threads.
#
#   scripts/callgrind-verify.sh [BINARY] [OUT_DIR]     # defaults: target/release/keyledger, a temp dir
#   KEYS_WITH=sources|credits|ratelimits scripts/callgrind-verify.sh …   # keys with that control
#   SOURCES=per-request scripts/callgrind-verify.sh …   # every JSON request from a new address
#
# Needs valgrind (callgrind_control) and python3. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/keyledger}")
out=${2:-$(mktemp -d)}
mkdir -p "$out"
data="$out/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$("$bin" init --data-dir "$data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_key"])')
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out.%p" \
    "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" 2>"$out/serve.stderr" &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 1
done
drive=scripts/callgrind_verify_drive.py
python3 $drive setup "$port" "$admin" 200 "$out/keys.json"
python3 $drive json "$port" 800 16 "$out/keys.json"
python3 $drive forward "$port" 800 16 "$out/keys.json"
for mode in json forward healthz; do
    python3 $drive barrier "$port" "$admin"
    callgrind_control -z $server >/dev/null
    python3 $drive $mode "$port" 4000 16 "$out/keys.json"
    python3 $drive barrier "$port" "$admin"
    callgrind_control -d $mode $server >/dev/null
done
kill -INT $server
wait $server || true
trap - EXIT
n=1
for mode in json forward healthz; do
    file="$out/cg.out.$server.$n"
    total=$(grep -m1 '^summary' "$file" | awk '{print $2}')
    threads=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null |
        grep -E '^ *[0-9,]+ .*(projector::run|Writer<S>::run) ' | tr -d ',' |
        awk '/projector/ {p=$1} /Writer/ {w=$1} END {printf "%d %d", p/4000, w/4000}')
    read -r projector writer <<<"$threads"
    echo "$mode: $((total / 4000)) instructions a request (projector $projector, writer $writer); $file"
    n=$((n + 1))
done
