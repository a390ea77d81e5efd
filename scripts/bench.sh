#!/usr/bin/env bash
# The benchmark of issue 7: peerjs against a trivial SwiftNIO relay (the ceiling) and
# python-peerjs-server (PyPI), under the same load, in the same run, servers alternated
# (A B C A B C …) with a fresh server process per run; prints a Markdown table of medians.
#
#   scripts/bench.sh            # default sizes, ≤ ~15 min
#   scripts/bench.sh --quick    # small sizes, 2 rounds, ≤ ~2 min
#   options: --runs N  --no-python  --scenarios "connect connect-19k relay relay-paced churn"  --out DIR
#            --labels "peerjs peerjs-noauth trivial python"   (which servers; default all)
#            --baseline BIN   adds the server "baseline": another peerjs binary (a release build of an
#                             earlier commit) run exactly as "peerjs", so before/after is one run:
#   git worktree add --detach /tmp/base REV && (cd /tmp/base && swift build -c release --product peerjs)
#   scripts/bench.sh --baseline /tmp/base/.build/release/peerjs --labels "peerjs baseline" --scenarios "connect relay"
#   scripts/bench.sh --scenarios leak   # the leak check alone: 100,000 sessions to settle, then
#                                       # 900,000 more (ours only, one run, ~6–8 min, bounded at 15)
#
# connect-19k (full mode only) holds 19,000 peers, ours and the trivial relay only: the python
# server accepts ~200 connections/s here (with its asyncio listen backlog of 100 it overflows),
# which would take the whole time budget.
#
# connect keeps 64 connections in flight: time to OPEN is then the server's latency, not the
# queue (by Little's law 256 in flight alone put the mean at 256 / rate, 32 ms at 8,000/s);
# connect-19k opens its 19,000 peers 256 at a time.
#
# Everything listens and connects on 127.0.0.1 only. Raw JSON results go to .build/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

quick=0 runs="" python=1 scenarios="connect connect-19k relay relay-paced churn" out="" baseline="" only=""
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs="$2"; shift ;;
    --no-python) python=0 ;;
    --scenarios) scenarios="$2"; shift ;;
    --out) out="$2"; shift ;;
    --baseline) baseline="$2"; shift ;;
    --labels) only="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done

if ((quick)); then
  : "${runs:=2}"; budget=120
  connect_n=2000 connect_c=64 hold=0.5 big_n=0 big_c=256
  pairs=32 inflight=4 relay_d=2 warm=0.5
  churn_c=64 churn_d=2
else
  : "${runs:=3}"; budget=900
  connect_n=5000 connect_c=64 hold=2 big_n=19000 big_c=256
  pairs=64 inflight=4 relay_d=6 warm=2
  churn_c=64 churn_d=6
fi
out="${out:-.build/bench/results-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
bench=.build/release/peerjs-bench
server=.build/release/peerjs

log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }

# What building needs (the C libraries, as for the tests) and jq for the medians; then build
# (neither counted in the budget).
scripts/setup.sh jq
log "building release (peerjs, peerjs-bench)"
swift build -c release --product peerjs >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
swift build -c release --product peerjs-bench >>"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }

labels="peerjs peerjs-noauth trivial"
if [ -n "$baseline" ]; then
  [ -x "$baseline" ] || { echo "bench.sh: --baseline $baseline is not an executable" >&2; exit 64; }
  labels="peerjs baseline peerjs-noauth trivial"
fi
if [ -n "$only" ] && ! [[ " $only " == *" python "* ]]; then python=0; fi
venv=.build/bench/venv
if ((python)); then
  py="${PYTHON313:-$HOME/.pyenv/versions/3.13.0/bin/python3}"
  if ! [ -x "$py" ] || ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' 2>/dev/null; then
    log "SKIPPING python-peerjs-server: no Python ≥ 3.13 at $py (set PYTHON313=/path/to/python3.13)"
  else
    if ! [ -x "$venv/bin/python" ]; then "$py" -m venv "$venv" >&2; fi
    if "$venv/bin/python" -c 'import python_peerjs_server' 2>/dev/null \
       || "$venv/bin/pip" install -q 'python-peerjs-server==1.0.0b2' >&2; then
      labels="peerjs peerjs-noauth trivial python"
    else
      log "SKIPPING python-peerjs-server: pip install python-peerjs-server==1.0.0b2 failed"
    fi
  fi
fi

if [ -n "$only" ]; then
  kept=""
  for l in $only; do
    [[ " $labels " == *" $l "* ]] || { echo "bench.sh: --labels: no server $l here (have: $labels)" >&2; exit 64; }
    kept="$kept $l"
  done
  labels="${kept# }"
fi

# The python server's CLI has no --concurrent_limit (its Config default is 5000), so it is
# started through its own peerjs_serve() with the limit raised, like ours, for the connect test.
read -r -d '' py_launcher <<'EOF' || true
import asyncio, logging, sys
from python_peerjs_server.config import Config
from python_peerjs_server.main import peerjs_serve
logging.basicConfig(level="WARNING")
asyncio.run(peerjs_serve(Config(host="127.0.0.1", port=int(sys.argv[1]), concurrent_limit=1_000_000)))
EOF

# As root the broker drops to --user (default _peerjs, made by the package); on a machine
# without that user the bench uses nobody.
user_args=()
if [ "$(id -u)" = 0 ] && ! id _peerjs >/dev/null 2>&1; then user_args=(--user nobody); fi
if [ "$(id -u)" = 0 ] && ! id _peerjs-auth >/dev/null 2>&1; then user_args+=(--auth-user nobody); fi
# The HS256 secret the auth helper checks tokens with; the bench signs each peer's token with it.
jwt_key="$out/jwt.key"
head -c 48 /dev/urandom | base64 | tr -d '\n=' >"$jwt_key"
chmod 644 "$jwt_key"  # the helper reads it as its own unprivileged user

server_pid="" server_port=""
start_server() {  # $1 label, $2 log file
  local label="$1" err="$2" i
  server_port=""
  case "$label" in
    peerjs|baseline)  # the shipped process model with the auth helper: every registration is a JWT the helper checks
      local binary="$server"; [ "$label" = baseline ] && binary="$baseline"
      "$binary" --host 127.0.0.1 --port 0 --log-level notice --concurrent_limit 100000 --ip_limit 0 --ip_handshake_limit 0 "${user_args[@]}" \
        --auth-jwt-key "$jwt_key" 2>"$err" &
      server_pid=$! ;;
    peerjs-noauth)  # the package's default configuration: no auth helper
      "$server" --host 127.0.0.1 --port 0 --log-level notice --concurrent_limit 100000 --ip_limit 0 --ip_handshake_limit 0 "${user_args[@]}" 2>"$err" &
      server_pid=$! ;;
    trivial)
      "$bench" trivial-relay --host 127.0.0.1 --port 0 2>"$err" &
      server_pid=$! ;;
    python)
      server_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      "$venv/bin/python" -c "$py_launcher" "$server_port" 2>"$err" &
      server_pid=$! ;;
  esac
  for i in $(seq 100); do
    if [ -z "$server_port" ]; then
      server_port=$(grep -o 'port: [0-9]*' "$err" 2>/dev/null | head -1 | cut -d' ' -f2 || true)
    fi
    if [ -n "$server_port" ] && (exec 3<>"/dev/tcp/127.0.0.1/$server_port") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "$label did not start:"; cat "$err" >&2
  return 1
}

stop_server() {
  local i
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT

median_of() {  # median of a JSON field over files
  local field="$1"; shift
  jq -s "map(.$field // empty) | sort | if length == 0 then empty else .[(length - 1) / 2 | floor] end" "$@" 2>/dev/null
}

start=$SECONDS seq=0 skipped=0
for scenario in $scenarios; do
  args=()
  case "$scenario" in
    connect) args=(connect --count "$connect_n" --concurrency "$connect_c" --hold "$hold" --timeout 120) ;;
    connect-19k)
      if ((big_n == 0)); then continue; fi
      args=(connect --count "$big_n" --concurrency "$big_c" --hold "$hold" --timeout 120 --tag 19k) ;;
    relay) args=(relay --pairs "$pairs" --inflight "$inflight" --duration "$relay_d" --warmup "$warm" --timeout 60) ;;
    relay-paced)
      # Half of our median max rate from the relay runs above (the latency target's load).
      max=$(median_of messagesPerSecond $(grep -l '"label":"peerjs"' "$out"/*-relay-*.json 2>/dev/null) || true)
      if [ -z "$max" ] || ! command -v jq >/dev/null; then log "skipping relay-paced: no relay result for peerjs (or no jq)"; continue; fi
      rate=$(jq -n "$max / 2 | floor")
      args=(relay --pairs "$pairs" --inflight "$inflight" --duration "$relay_d" --warmup "$warm" --rate "$rate" --timeout 60) ;;
    churn) args=(churn --concurrency "$churn_c" --duration "$churn_d" --warmup "$warm" --timeout 90) ;;
    leak) args=(churn --concurrency 64 --warmup-sessions 100000 --count 900000 --duration 900 --timeout 900 --tag 1m) ;;
    *) log "unknown scenario $scenario"; exit 64 ;;
  esac
  scenario_labels="$labels" scenario_runs="$runs"
  if [ "$scenario" = connect-19k ]; then scenario_labels="${labels/ python/}"; scenario_runs=2; fi
  if [ "$scenario" = leak ]; then scenario_labels=peerjs; scenario_runs=1; budget=$((budget + 900)); fi
  read -ra order <<<"$scenario_labels"
  for round in $(seq "$scenario_runs"); do
    # Each round starts one server later (A B C, B C A, C A B): no server always runs right
    # after the same one (python leaves the machine busiest) or first in its scenario.
    for ((k = 0; k < ${#order[@]}; k++)); do
      label=${order[$(( (k + round - 1) % ${#order[@]} ))]}
      if ((SECONDS - start > budget)); then skipped=$((skipped + 1)); continue; fi
      seq=$((seq + 1))
      name=$(printf '%03d-%s-%s-r%d' "$seq" "$scenario" "$label" "$round")
      start_server "$label" "$out/$name.server.log" || { stop_server; continue; }
      log "$scenario round $round: $label (port $server_port, load $(cut -d' ' -f1-3 /proc/loadavg))"
      jwt=(); [ "$label" = peerjs ] || [ "$label" = baseline ] && jwt=(--jwt-secret-file "$jwt_key")
      if ! "$bench" "${args[@]}" "${jwt[@]}" --port "$server_port" --server-pid "$server_pid" --label "$label" --json \
          >"$out/$name.json" 2>"$out/$name.err"; then
        log "  $name exited $? (see $out/$name.err)"
      fi
      stop_server
    done
  done
done
((skipped == 0)) || log "time budget of ${budget}s reached: $skipped runs skipped"

{
  echo "## Results $(date -u +%Y-%m-%dT%H:%MZ) ($( ((quick)) && echo quick || echo full), $runs rounds, servers alternated)"
  echo
  echo "Machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r), $(swift --version 2>&1 | head -1)"
  echo
  "$bench" report --ours peerjs "$out"/*.json
} | tee "$out/table.md"
log "raw results in $out ($(( SECONDS - start ))s)"
