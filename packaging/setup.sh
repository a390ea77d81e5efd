#!/usr/bin/env bash
# Installs what building and testing the Debian package needs on Debian 12 (idempotent):
# debhelper, dpkg-dev, lintian, mandoc, debootstrap and systemd-nspawn. Not part of
# scripts/setup.sh: the plain `swift test` needs none of this.
set -euo pipefail
"$(dirname "$0")/../scripts/setup.sh"
packages=(debhelper dpkg-dev fakeroot lintian mandoc man-db debootstrap systemd-container)
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
