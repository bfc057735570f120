#!/usr/bin/env bash
# Installs what the console's browser tests need (tests/console/): Debian's chromium and
# firefox-esr, and the pinned clients that drive them (playwright-core for chromium,
# puppeteer-core for Firefox over WebDriver BiDi; npm ci, from package-lock.json).
# Idempotent: it does nothing that is already done. Needs root (or sudo) only when a
# browser is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
fi
chromium --version
firefox-esr --version

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-browser.sh: node (>= 20) and npm are needed for tests/console" >&2
    exit 1
fi
node --version

# The clients only drive the browsers above; neither downloads one (no postinstall fetch).
(cd tests/console && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 \
    npm ci --no-audit --no-fund --loglevel=error)
