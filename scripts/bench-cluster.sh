#!/usr/bin/env bash
# The cluster benchmark of issue 18: one instance against two instances sharing one PostgreSQL
# (scripts/pg-scratch.sh, Debian's postgresql), in the same run, modes alternated round by round,
# fresh servers for every round. Prints a Markdown table of medians (peerjs-bench report) and
# the aggregate connect rate of two instances against one.
#
#   scripts/bench-cluster.sh            # 3 rounds, ≤ ~8 min
#   scripts/bench-cluster.sh --quick    # small sizes, 2 rounds, ≤ ~2 min
#   options: --runs N  --out DIR
#
# Labels in the table:
#   single    one instance, no --cluster: connect, and relay between two of its peers
#   cluster   two instances (A, B) with --cluster: connect to A (every id claimed in the
#             directory), and relay between a peer on A and one on B (NOTIFY both ways);
#             server CPU counts A's processes only (B and PostgreSQL work too)
# relay runs at full speed and, as relay-paced, at 2,000 messages/s (latency below saturation).
# and, printed below the table: two instances' aggregate connect rate (a bench against each at
# once) next to one instance's, in the same run.
#
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench-cluster.sh: unknown option $1" >&2; exit 64 ;;
  esac
  shift
done
if ((quick)); then
  : "${runs:=2}"; connect_n=2000 connect_c=64 hold=0.5 pairs=32 inflight=4 relay_d=2 warm=0.5
else
  : "${runs:=3}"; connect_n=5000 connect_c=64 hold=1 pairs=64 inflight=4 relay_d=6 warm=2
fi
out="${out:-.build/bench/cluster-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
bench=.build/release/peerjs-bench
server=.build/release/peerjs
log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }

scripts/setup.sh jq
log "building release (peerjs, peerjs-bench)"
swift build -c release --product peerjs >"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }
swift build -c release --product peerjs-bench >>"$out/build.log" 2>&1 || { cat "$out/build.log" >&2; exit 1; }

user_args=()
if [ "$(id -u)" = 0 ] && ! id _peerjs >/dev/null 2>&1; then user_args=(--user nobody); fi
if [ "$(id -u)" = 0 ] && ! id _peerjs-cluster >/dev/null 2>&1; then user_args+=(--cluster-user nobody); fi

pg_dir=$(mktemp -d /tmp/peerjs-bench-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$pg_password" >"$pg_dir.password"
chmod 600 "$pg_dir.password"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/pg-scratch.sh kill "$pg_dir" >/dev/null 2>&1 || true
  rm -rf "$pg_dir" "$pg_dir.password"
}
trap cleanup EXIT
log "starting PostgreSQL on 127.0.0.1:$pg_port"
scripts/pg-scratch.sh start "$pg_dir" "$pg_port" "$pg_password"

# start_instance LOG [FLAGS…]: starts peerjs, sets $pid and $port once it serves (and, with
# --cluster, once its directory is available).
start_instance() {
  local err="$1" i; shift
  "$server" --host 127.0.0.1 --port 0 --log-level notice --concurrent_limit 100000 --ip_limit 0 --ip_handshake_limit 0 \
    "${user_args[@]}" "$@" 2>"$err" &
  pid=$!
  pids+=("$pid")
  port=""
  for i in $(seq 200); do
    port=$(grep -o 'port: [0-9]*' "$err" 2>/dev/null | head -1 | cut -d' ' -f2 || true)
    if [ -n "$port" ] && { [[ " $* " != *" --cluster "* ]] || grep -q 'peer directory available' "$err"; }; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log "peerjs did not start:"; cat "$err" >&2
  return 1
}

stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

connect_args=(connect --count "$connect_n" --concurrency "$connect_c" --hold "$hold" --timeout 120)
relay_args=(relay --pairs "$pairs" --inflight "$inflight" --duration "$relay_d" --warmup "$warm" --timeout 60)
# Latency below saturation: 2,000 messages/s in all (the rate of the issue's NOTIFY reference).
paced_args=(relay --pairs "$pairs" --inflight "$inflight" --duration "$relay_d" --warmup "$warm" --rate 2000 --timeout 60)
cluster_flags() { echo --cluster "postgres://peerjs@127.0.0.1:$pg_port/peerjs" --cluster-password-file "$pg_dir.password" --cluster-instance "$1"; }

start=$SECONDS seq=0
for round in $(seq "$runs"); do
  order=(single cluster); ((round % 2 == 0)) && order=(cluster single)
  for mode in "${order[@]}"; do
    seq=$((seq + 1)); name=$(printf '%03d-%s-r%d' "$seq" "$mode" "$round")
    log "round $round: $mode (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ "$mode" = single ]; then
      start_instance "$out/$name.a.log"; a_pid=$pid a_port=$port
      "$bench" "${connect_args[@]}" --port "$a_port" --server-pid "$a_pid" --label single --json >"$out/$name-connect.json" 2>"$out/$name-connect.err" || log "  connect exited $?"
      "$bench" "${relay_args[@]}" --port "$a_port" --server-pid "$a_pid" --label single --json >"$out/$name-relay.json" 2>"$out/$name-relay.err" || log "  relay exited $?"
      "$bench" "${paced_args[@]}" --port "$a_port" --server-pid "$a_pid" --label single --json >"$out/$name-paced.json" 2>"$out/$name-paced.err" || log "  paced relay exited $?"
      # Two independent instances (no --cluster) at once: what a second process buys on its own.
      start_instance "$out/$name.b.log"; b_port=$port
      "$bench" "${connect_args[@]}" --port "$a_port" --label both-a --tag both --json >"$out/$name-both-a.agg" 2>/dev/null &
      first=$!
      "$bench" "${connect_args[@]}" --port "$b_port" --label both-b --tag both --json >"$out/$name-both-b.agg" 2>/dev/null || true
      wait "$first" || true
    else
      # shellcheck disable=SC2046
      start_instance "$out/$name.a.log" $(cluster_flags "a$round"); a_pid=$pid a_port=$port
      # shellcheck disable=SC2046
      start_instance "$out/$name.b.log" $(cluster_flags "b$round"); b_port=$port
      "$bench" "${connect_args[@]}" --port "$a_port" --server-pid "$a_pid" --label cluster --json >"$out/$name-connect.json" 2>"$out/$name-connect.err" || log "  connect exited $?"
      "$bench" "${relay_args[@]}" --port "$a_port" --peer-port "$b_port" --server-pid "$a_pid" --label cluster --json >"$out/$name-relay.json" 2>"$out/$name-relay.err" || log "  relay exited $?"
      "$bench" "${paced_args[@]}" --port "$a_port" --peer-port "$b_port" --server-pid "$a_pid" --label cluster --json >"$out/$name-paced.json" 2>"$out/$name-paced.err" || log "  paced relay exited $?"
      # Two instances at once: one bench against each, started together.
      "$bench" "${connect_args[@]}" --port "$a_port" --label both-a --tag both --json >"$out/$name-both-a.agg" 2>/dev/null &
      first=$!
      "$bench" "${connect_args[@]}" --port "$b_port" --label both-b --tag both --json >"$out/$name-both-b.agg" 2>/dev/null || true
      wait "$first" || true
    fi
    stop_all
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
rate() { jq -r 'select(type == "object") | .connectionsPerSecond // empty' "$@" 2>/dev/null; }
one=$(for f in "$out"/*-single-r*-connect.json; do rate "$f"; done | median)
aggregate() {  # MODE: the median over rounds of the two benches' summed rates
  local r files
  for r in $(seq "$runs"); do
    files=("$out"/*-"$1"-r"$r"-both-*.agg)
    [ -e "${files[0]}" ] && rate "${files[@]}" | awk '{ s += $1 } END { if (NR == 2) printf "%.0f\n", s }'
  done | median
}
two=$(aggregate cluster)
two_plain=$(aggregate single)
one=$(printf '%.0f' "${one:-0}")
{
  echo "## Cluster results $(date -u +%Y-%m-%dT%H:%MZ) ($( ((quick)) && echo quick || echo full), $runs rounds, modes alternated)"
  echo
  echo "Machine: $(nproc) CPUs, $(free -h | awk '/^Mem:/ {print $2}') RAM, kernel $(uname -r), $(swift --version 2>&1 | head -1), $(/usr/lib/postgresql/*/bin/postgres --version | tail -1)"
  echo
  "$bench" report --ours cluster "$out"/*.json
  echo
  echo "| connect, aggregate | connections/s |"
  echo "|---|---|"
  echo "| one instance (single) | ${one:-–} |"
  echo "| two independent instances (no --cluster), a bench against each at once | ${two_plain:-–} |"
  echo "| two instances with --cluster, a bench against each at once | ${two:-–} |"
} | tee "$out/table.md"
log "raw results in $out ($(( SECONDS - start ))s)"
