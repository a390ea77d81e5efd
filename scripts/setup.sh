#!/usr/bin/env bash
# Installs what building and testing peerjs needs on a fresh Debian 12 machine (idempotent):
# the C libraries the system-library targets link, and the tools the tests drive. Extra Debian
# package names given as arguments are installed too (packaging/setup.sh passes its tools).
# It also creates the system users peerjs drops to when it starts as root (`_peerjs` for the
# broker, `_peerjs-auth` for the auth helper, `_peerjs-policy` for its policy program, and
# `_peerjs-supervisor`) as the Debian package
# does, from packaging/debian/peerjs.sysusers.
set -euo pipefail
packages=("$@" pkgconf libseccomp-dev libsystemd-dev libssl-dev systemd openssl)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The users, only if one is missing (so an ordinary user who has them is never asked for sudo).
sysusers="$(cd "$(dirname "$0")/.." && pwd)/packaging/debian/peerjs.sysusers"
users_missing=0
for u in _peerjs _peerjs-auth _peerjs-policy _peerjs-supervisor; do id -u "$u" >/dev/null 2>&1 || users_missing=1; done
if ((users_missing)); then
  if command -v systemd-sysusers >/dev/null; then
    $sudo systemd-sysusers "$sysusers"
  else
    # The same users without systemd-sysusers: system accounts, no home directory, no login.
    while read -r type name _ gecos; do
      [ "$type" = u ] || continue
      id -u "$name" >/dev/null 2>&1 && continue
      gecos="${gecos#\"}"; gecos="${gecos%%\"*}"
      $sudo useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "$gecos" "$name"
    done < "$sysusers"
  fi
fi
command -v swift >/dev/null || { [ -x /opt/swift/usr/bin/swift ] && echo "add /opt/swift/usr/bin to PATH" >&2; exit 1; }
