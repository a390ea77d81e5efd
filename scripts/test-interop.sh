#!/usr/bin/env bash
# Interop test (issue 8): the Python PeerJS client peerjs-py (on aiortc) against the real
# `peerjs` binary — two peers open a WebRTC DataConnection through it and exchange a message
# both ways; a third asking for a taken id gets `unavailable-id`; the same two peers through the
# Hummingbird example app with PeerJSKit mounted at /peerjs (issue 19). See Tests/interop/.
#
#   scripts/test-interop.sh                       # builds .build/debug/peerjs if needed
#   PEERJS_BINARY=/path/to/peerjs scripts/test-interop.sh
#   PYTHON=/path/to/python3.11+ scripts/test-interop.sh
#   PEERJS_PY_LOG=all scripts/test-interop.sh -x  # client debug log; extra args go to pytest
#
# Makes a virtual environment in .venv-interop/ (git-ignored) on first use and reuses it while
# the requirements below stay the same. Loopback only; no STUN/TURN.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

venv=.venv-interop
# aiortc 1.16 needs Python >= 3.11. peerjs-py 0.1.1 pins pyee<13 while aiortc needs pyee>=13,
# and pip would then try to build PyAV from source; so peerjs-py goes in with --no-deps, plus
# the two packages it imports that aiortc does not bring (aiohttp: its WebSocket; requests:
# its HTTP API). It runs with aiortc's pyee 13 (AsyncIOEventEmitter is unchanged).
requirements=(pytest "aiortc==1.16.0" "aiohttp>=3.7.4,<4" "requests>=2.25.1,<3")
nodeps=(peerjs-py==0.1.1)
stamp="$venv/.interop-requirements"
want="${requirements[*]} --no-deps ${nodeps[*]}"

python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python=""
  for candidate in ${PYTHON:-} python3 "$HOME/.pyenv/versions/3.11.7/bin/python3" /usr/bin/python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$(command -v "$candidate")"; then
      python="$(command -v "$candidate")"; break
    fi
  done
  if [ -z "$python" ]; then
    echo "test-interop: no Python >= 3.11 with venv/ensurepip found (set PYTHON=...)" >&2
    exit 1
  fi
  echo "test-interop: creating $venv with $python ($("$python" --version 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input -q)
  timeout 900 "${pip[@]}" install "${requirements[@]}"
  # pip's resolver notes the pyee<13 pin it was told to skip; that note is expected.
  if ! out="$(timeout 300 "${pip[@]}" install --no-deps "${nodeps[@]}" 2>&1)"; then
    printf '%s\n' "$out" >&2; exit 1
  fi
  printf '%s\n' "$out" | grep -v -e "pyee<13" -e "dependency resolver does not" -e '^$' >&2 || true
  "$venv/bin/python" -c 'import peerjs_py, aiortc, aiohttp, requests, pytest' # installed and importable
  echo "$want" >"$stamp"
fi

if [ -z "${PEERJS_BINARY:-}" ]; then
  swift build --product peerjs
  PEERJS_BINARY="$(swift build --product peerjs --show-bin-path)/peerjs"
fi
export PEERJS_BINARY
echo "test-interop: server binary $PEERJS_BINARY"
# The Hummingbird example app with PeerJSKit mounted at /peerjs (issue 19).
if [ -z "${EXAMPLE_BINARY:-}" ]; then
  swift build --product peerjs-hummingbird-example
  EXAMPLE_BINARY="$(swift build --product peerjs-hummingbird-example --show-bin-path)/peerjs-hummingbird-example"
fi
export EXAMPLE_BINARY

# pytest's own bound; each wait inside the test is bounded as well.
PYTHONDONTWRITEBYTECODE=1 timeout -k 10 300 \
  "$venv/bin/python" -m pytest -p no:cacheprovider -v -rA Tests/interop "$@"
