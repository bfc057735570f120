#!/usr/bin/env bash
# Installs PostgreSQL's server from Debian's packages (postgresql), for the tests of the
# PostgreSQL store (crates/pg, tests/ha*.rs) and `cargo xtask bench --store postgres`.
#
# Never starts a system service: every test runs its own throwaway cluster (initdb in a temp
# dir, as the `postgres` user when run as root, on 127.0.0.1; see crates/pg/src/testing.rs).
# Idempotent and quick when PostgreSQL is there. Run as root (CI is), or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
$SUDO apt-get update -qq
# The package's own cluster is not wanted: tests create theirs.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version name _; do
        $SUDO pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
    done
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
