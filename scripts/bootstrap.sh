#!/usr/bin/env bash
# Make this checkout runnable on a bare Debian/Ubuntu machine: system packages, then a virtualenv
# in .venv with the pinned Python packages. Idempotent and quick when everything is there.
#   scripts/bootstrap.sh runtime   # what the product needs
#   scripts/bootstrap.sh dev       # also what the tests and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-dev}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: installing system packages needs root (run as root or with sudo): $*" >&2
        exit 1
    fi
}

# System packages: the product's tools and, for the tests, a whole farm on one machine.
packages=(python3 python3-venv python3-pip smartmontools netcat-openbsd openssh-client util-linux e2fsprogs)
if [ "$kind" = dev ]; then
    packages+=(openssh-server openssh-sftp-server xfsprogs iproute2 rsync parted)
    # The dashboard's tests: a real browser and node_exporter's textfile collector.
    packages+=(chromium chromium-driver prometheus-node-exporter)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "${BOOTSTRAP_NO_APT:-0}" = 1 ]; then
    echo "bootstrap: not installing ${missing[*]} (asked not to use apt)" >&2
elif [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    need_root "${missing[*]}"
    echo "bootstrap: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# chromedriver and chromium find each other by the name "localhost" (the dashboard's browser
# tests). Every installed Debian resolves it from /etc/hosts; a bare debootstrap root has no
# /etc/hosts at all, so give it the installer's lines.
if [ "$kind" = dev ] && ! getent hosts localhost >/dev/null; then
    need_root "a localhost line in /etc/hosts"
    echo "bootstrap: localhost does not resolve; adding it to /etc/hosts"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >> /etc/hosts
fi

# The virtualenv, rebuilt only when the requirement files change.
req=requirements.txt
[ "$kind" = dev ] && req=requirements-dev.txt
stamp=.venv/.installed-$kind
want=$(cat requirements.txt "$req" | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: pip install -r $req"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
fi
