#!/usr/bin/env bash
# Installs what building, running and testing the gateway needs on Debian 12.
# Run as root. Idempotent: skips apt-get when everything is already there.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libcmocka-dev liburcu-dev libssl-dev
      valgrind curl python3 python3-yaml procps
      zlib1g-dev libgnutls28-dev openssl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing packages: ${missing[*]}; run as root: $0" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
