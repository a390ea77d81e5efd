#!/usr/bin/env bash
# Installs what building and testing peerjs needs on a fresh Debian 12 machine (idempotent):
# the C libraries the system-library targets link, and the tools the tests drive. Extra Debian
# package names given as arguments are installed too (packaging/setup.sh passes its tools).
# `postgresql` is the server the clustering tests run: each test starts a scratch server of its
# own (initdb and pg_ctl from /usr/lib/postgresql/<version>/bin) on a port of its own; the
# package's own cluster (15/main, port 5432), started or not by its installation, is left as
# it is.
# It also creates the system users peerjs drops to when it starts as root (`_peerjs` for the
# broker, `_peerjs-auth` for the auth helper, `_peerjs-policy` for its policy program,
# `_peerjs-cluster` for the cluster role, and `_peerjs-supervisor`) as the Debian package
# does, from packaging/debian/peerjs.sysusers.
set -euo pipefail
packages=("$@" pkgconf libseccomp-dev libsystemd-dev libssl-dev systemd openssl postgresql)
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
for u in _peerjs _peerjs-auth _peerjs-policy _peerjs-cluster _peerjs-supervisor; do id -u "$u" >/dev/null 2>&1 || users_missing=1; done
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
