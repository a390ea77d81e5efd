#!/usr/bin/env bash
# The metrics benchmark of issue 19: the cost of `--metrics-port` on connect and relay, with it
# off and on in the same run, modes alternated round by round, fresh servers every round, release
# builds. With it on, a scraper fetches GET /metrics every second all along (Prometheus' default
# is every 15 s). Prints a Markdown table of medians (peerjs-bench report).
#
#   scripts/bench-metrics.sh            # 3 rounds, ≤ ~5 min
#   scripts/bench-metrics.sh --quick    # small sizes, 2 rounds, ≤ ~2 min
#   options: --runs N  --out DIR
#
# Labels: `metrics` (--metrics-port 0, scraped) and `plain` (no metrics port). Server CPU and
# memory count every process of the server (supervisor, broker).
# Everything listens and connects on 127.0.0.1 only. Raw JSON results go to .build/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

quick=0 runs="" out=""
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-metrics.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done
if ((quick)); then
  : "${runs:=2}"; connect_n=2000 connect_c=64 hold=0.5 pairs=32 inflight=4 relay_d=2 warm=0.5
else
  : "${runs:=3}"; connect_n=5000 connect_c=64 hold=1 pairs=64 inflight=4 relay_d=6 warm=2
fi
out="${out:-.build/bench/metrics-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
bench=.build/release/peerjs-bench
server=.build/release/peerjs
log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }

scripts/setup.sh
log "building release (peerjs, peerjs-bench)"
swift build -c release --product peerjs >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
swift build -c release --product peerjs-bench >>"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }

user_args=()
if [ "$(id -u)" = 0 ] && ! id _peerjs >/dev/null 2>&1; then user_args=(--user nobody); fi

pid="" scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# start LOG [FLAGS…]: starts peerjs, sets $pid, $port and (with --metrics-port) $metrics_port.
start() {
  local err="$1" i; shift
  "$server" --host 127.0.0.1 --port 0 --log-level notice --concurrent_limit 100000 --ip_limit 0 --ip_handshake_limit 0 \
    "${user_args[@]}" "$@" 2>"$err" &
  pid=$!
  for i in $(seq 200); do
    port=$(grep -o 'port: [0-9]*' "$err" 2>/dev/null | head -1 | cut -d' ' -f2 || true)
    metrics_port=$(grep -o 'port [0-9]* (metrics' "$err" 2>/dev/null | head -1 | cut -d' ' -f2 || true)
    if [ -n "$port" ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "peerjs did not start:"; cat "$err" >&2
  return 1
}

stop() {
  if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=""; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

# scrape PORT: GET /metrics every second until SIGTERM; appends "scrapes bytes-of-the-last"
# to $out/scrapes.
scrape() {
  python3 - "$1" >>"$out/scrapes" <<'PY' &
import signal, sys, time, urllib.request
port, n, size = sys.argv[1], 0, 0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        size = len(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
        n += 1
        time.sleep(1)
finally:
    print(n, size, flush=True)
PY
  scraper=$!
}

connect_args=(connect --count "$connect_n" --concurrency "$connect_c" --hold "$hold" --timeout 120)
relay_args=(relay --pairs "$pairs" --inflight "$inflight" --duration "$relay_d" --warmup "$warm" --timeout 60)

begin=$SECONDS seq=0
for round in $(seq "$runs"); do
  order=(plain metrics); ((round % 2 == 0)) && order=(metrics plain)
  for mode in "${order[@]}"; do
    seq=$((seq + 1)); name=$(printf '%03d-%s-r%d' "$seq" "$mode" "$round")
    log "round $round: $mode (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ "$mode" = metrics ]; then
      start "$out/$name.log" --metrics-port 0
      [ -n "$metrics_port" ] || { log "no metrics port in $out/$name.log"; exit 1; }
      scrape "$metrics_port"
    else
      start "$out/$name.log"
    fi
    "$bench" "${connect_args[@]}" --port "$port" --server-pid "$pid" --label "$mode" --json >"$out/$name-connect.json" 2>"$out/$name-connect.err" || log "  connect exited $?"
    "$bench" "${relay_args[@]}" --port "$port" --server-pid "$pid" --label "$mode" --json >"$out/$name-relay.json" 2>"$out/$name-relay.err" || log "  relay exited $?"
    stop
  done
done
{
  echo "## Metrics results $(date -u +%Y-%m-%dT%H:%MZ) ($( ((quick)) && echo quick || echo full), $runs rounds, modes alternated)"
  echo
  echo "Machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r), $(swift --version 2>&1 | head -1)"
  echo
  "$bench" report --ours metrics "$out"/*.json
  echo
  echo "Scrapes per metrics round (count, bytes of the last): $(tr '\n' ';' <"$out/scrapes" 2>/dev/null)"
} | tee "$out/table.md"
log "raw results in $out ($(( SECONDS - begin ))s)"
