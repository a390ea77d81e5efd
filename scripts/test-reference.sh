#!/usr/bin/env bash
# Runs the Swift protocol behaviour tests (ProcessModelTests, PROTOCOL.md §11) against a
# reference server instead of our own binary: python-peerjs-server (PyPI, an asyncio port of
# the Node peerjs-server 1.0.x), through the suite's PEERJS_TEST_URL support. Results and the
# places where we differ on purpose are in docs/compat.md.
#
#   scripts/test-reference.sh                    # all ProcessModelTests that allow an external server
#   scripts/test-reference.sh --filter Relay     # extra args go to `swift test` (after --filter ProcessModelTests)
#   REFERENCE_PYTHON=/path/to/python3.13 scripts/test-reference.sh
#
# What it does, every step bounded in time:
#   1. finds Python >= 3.13 (python-peerjs-server needs it): $REFERENCE_PYTHON, else
#      ~/.pyenv/versions/3.13.0/bin/python3, else python3.13/python3.14 on PATH; if there is none
#      it prints why and exits 0 (skipped);
#   2. makes a venv in .reference/venv (git-ignored) and pip-installs python-peerjs-server there;
#   3. builds the tests (`swift build --build-tests`) before any server runs;
#   4. starts the reference on 127.0.0.1 at a free port with discovery on, waits for `GET /`;
#   5. runs PEERJS_TEST_URL=http://127.0.0.1:PORT/ swift test --skip-build --filter ProcessModelTests
#      (suites that need their own flags or processes skip themselves);
#   6. stops the server (SIGTERM, then SIGKILL) whatever happened; exits with swift test's status.
# Logs: .reference/server.log, .reference/swift-test.log.
#
# The reference is started through its library (python_peerjs_server.main.peerjs_serve with a
# Config), not its CLI, for one reason: it rate-limits GET {key}/id and {key}/peers to 10
# requests per IP per minute (its own hardening, not Node behaviour), and the suite polls
# /peers. The limit is raised to 10^6; every other setting is the reference's default.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

dir=.reference
venv="$dir/venv"
requirement="python-peerjs-server==1.0.0b2"

python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; }

python=""
for candidate in ${REFERENCE_PYTHON:-} "$HOME/.pyenv/versions/3.13.0/bin/python3" python3.13 python3.14; do
  if command -v "$candidate" >/dev/null 2>&1 && python_ok "$(command -v "$candidate")"; then
    python="$(command -v "$candidate")"; break
  fi
done
if [ -z "$python" ]; then
  echo "test-reference: SKIPPED: python-peerjs-server needs Python >= 3.13 with venv; none found" >&2
  echo "test-reference: (tried \$REFERENCE_PYTHON, ~/.pyenv/versions/3.13.0/bin/python3, python3.13, python3.14)" >&2
  exit 0
fi

mkdir -p "$dir"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirement" 2>/dev/null)" != "$requirement" ]; then
  echo "test-reference: creating $venv with $python ($("$python" --version 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  timeout 600 "$venv/bin/python" -m pip --disable-pip-version-check --no-input -q install "$requirement"
  echo "$requirement" >"$venv/.requirement"
fi

timeout 3600 swift build --build-tests

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port/"

# Started in its own session so that stopping it reaches only what this script started.
setsid "$venv/bin/python" - "$port" >"$dir/server.log" 2>&1 <<'EOF' &
import asyncio, logging, sys
from python_peerjs_server.config import Config
from python_peerjs_server.main import peerjs_serve

logging.basicConfig(level="INFO")
config = Config(host="127.0.0.1", port=int(sys.argv[1]), allow_discovery=True, rate_limit_max_requests=1_000_000)
asyncio.run(peerjs_serve(config))
EOF
server=$!

stop_server() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server" 2>/dev/null || kill -KILL "$server" 2>/dev/null || true
  fi
  wait "$server" 2>/dev/null || true
}
trap stop_server EXIT

if ! "$venv/bin/python" - "$url" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
then
  echo "test-reference: the reference server did not answer GET $url within 20 s:" >&2
  cat "$dir/server.log" >&2
  exit 1
fi
echo "test-reference: python-peerjs-server ($requirement) at $url"

status=0
PEERJS_TEST_URL="$url" timeout -k 10 1800 swift test --skip-build --filter ProcessModelTests "$@" 2>&1 |
  tee "$dir/swift-test.log" || status=$?
echo "test-reference: swift test exited $status against the reference (failures are expected where docs/compat.md says we differ)"
exit "$status"
