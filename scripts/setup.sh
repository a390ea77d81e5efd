#!/usr/bin/env bash
# Installs what building and testing peerjs needs on a fresh Debian 12 machine (idempotent):
# the C libraries the system-library targets link, and the tools the tests drive. Extra Debian
# package names given as arguments are installed too (packaging/setup.sh passes its tools).
set -euo pipefail
packages=("$@" pkgconf libseccomp-dev libsystemd-dev libssl-dev systemd openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { [ -x /opt/swift/usr/bin/swift ] && echo "add /opt/swift/usr/bin to PATH" >&2; exit 1; }
