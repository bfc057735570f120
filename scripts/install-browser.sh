#!/usr/bin/env bash
# Installs what the console's browser tests need (tests/console/): Debian's chromium and
# the pinned playwright-core client (npm ci, from package-lock.json). Idempotent: it does
# nothing that is already done. Needs root (or sudo) only when chromium is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-browser.sh: node (>= 20) and npm are needed for tests/console" >&2
    exit 1
fi
node --version

# playwright-core only drives the browser; it downloads none (no postinstall browser fetch).
(cd tests/console && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
