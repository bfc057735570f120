# shellcheck shell=bash
# What the scripts that drive a real `keyledger serve` share; sourced, never run:
#
#   source scripts/lib/serve.sh
#   serve_install_tool NAME VENV TOOL VERSION   # pip-installs TOOL==VERSION into VENV if missing
#   serve_start NAME BIN                        # sets work, server, admin, base
#   ...                                         # drive "$base" with "$admin"
#   serve_finish "$status"                      # exits
#
# serve_start initialises a throwaway data dir in a scratch directory ($work), serves it on a
# free loopback port with JSON logs ($work/serve.log) and waits for /healthz; an EXIT trap stops
# the server with SIGTERM and removes $work. serve_finish exits with the given status, or 1 when
# the server is gone (crashed?) or logged an error. NAME prefixes every message.

# Installs TOOL==VERSION into the virtualenv VENV unless VENV/bin/TOOL already reports VERSION.
serve_install_tool() {
    local name=$1 venv=$2 tool=$3 version=$4
    if ! "$venv/bin/$tool" --version 2>/dev/null | grep -q "$version"; then
        echo "$name: installing $tool $version into $venv"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian's python3 lacks venv until python3-venv is installed (CI runs as root).
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$venv"
        fi
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$tool==$version"
    fi
}

serve_cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}

# `keyledger init` + `keyledger serve` of BIN; sets work, server (its pid), admin (the init
# admin key) and base (its URL).
serve_start() {
    serve_name=$1
    local bin=$2 port
    work=$(mktemp -d)
    server=""
    trap serve_cleanup EXIT

    "$bin" init --data-dir "$work/data" >"$work/init.json"
    admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_key"])' "$work/init.json")
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base="http://127.0.0.1:$port"

    "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --log-format json >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
        if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$server" 2>/dev/null; then cat "$work/serve.log"; echo "$serve_name: the server died" >&2; exit 1; fi
        sleep 0.1
    done
    curl -fsS "$base/healthz" >/dev/null
}

# Exits with STATUS, or 1 when the server is gone or logged an error.
serve_finish() {
    local status=$1
    if ! kill -0 "$server" 2>/dev/null; then
        echo "$serve_name: the server is gone (crashed?); its log:" >&2
        tail -50 "$work/serve.log" >&2
        exit 1
    fi
    if grep -q '"level":"ERROR"' "$work/serve.log"; then
        echo "$serve_name: the server logged errors:" >&2
        grep '"level":"ERROR"' "$work/serve.log" | head -20 >&2
        status=1
    fi
    exit "$status"
}
