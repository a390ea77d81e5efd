#!/usr/bin/env bash
# The Debian package as a user meets it: build it (or take the .deb given), run the static
# checks (man page drift, mandoc -Tlint, systemd-analyze security), debootstrap a minimal
# bookworm once into a cache outside the repo, boot it with systemd-nspawn (volatile overlay:
# the cache stays pristine), install the package with apt-get, start peerjs.socket, get OPEN
# from a PeerJS WebSocket client, check the processes' users and the broker's confinement,
# reload, stop, purge, and check that nothing is left. Every wait is bounded; on failure the
# journal is printed. Needs root.
# Usage: packaging/test-install.sh [dist/peerjs_<version>_<arch>.deb]
# Env: PEERJS_TEST_CACHE (default /var/cache/peerjs-test), DEBIAN_MIRROR (default: the first
# Debian mirror in apt's sources, else http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "$(id -u)" -eq 0 ] || { echo "test-install: needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
export PATH="/opt/swift/usr/bin:$PATH"
t0=$(date +%s)
step() { echo "== $(date -u +%H:%M:%S) (+$(( $(date +%s) - t0 ))s) $*"; }

step "setup"
packaging/setup.sh

cache=${PEERJS_TEST_CACHE:-/var/cache/peerjs-test}
rootfs=$cache/bookworm
include=systemd,systemd-sysv,dbus,python3,libssl3,libseccomp2,procps
stamp="bookworm minbase $include"
# The rootfs is made once (debootstrap, ~6 min), in the background while the package builds.
rootfs_pid=""
if [ "$(cat "$cache/bookworm.stamp" 2>/dev/null)" != "$stamp" ]; then
  mirror=${DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -1 || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  step "debootstrap bookworm from $mirror into $rootfs (once; cached), in the background"
  mkdir -p "$cache"
  rm -rf "$rootfs" "$rootfs.tmp" "$cache/bookworm.stamp"
  timeout 1200 debootstrap --variant=minbase --include="$include" bookworm "$rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 &
  rootfs_pid=$!
  # An early exit (a failed build) stops it: TERM to timeout reaches debootstrap.
  trap '[ -n "$rootfs_pid" ] && kill -TERM "$rootfs_pid" 2>/dev/null; exit 1' EXIT
else
  step "rootfs cached at $rootfs"
fi

if [ $# -ge 1 ]; then
  deb=$(realpath "$1")
else
  step "build the package"
  packaging/build-deb.sh
  deb=$(ls "$root"/dist/peerjs_*.deb | grep -v dbgsym | head -1)
fi
work=$(mktemp -d /tmp/peerjs-install-test.XXXXXX)
cp "$deb" packaging/ws-open.py "$work/"
debname=$(basename "$deb")
dpkg-deb -x "$deb" "$work/extracted"

step "static checks"
packaging/check-static.sh "$work/extracted/usr/sbin/peerjs"

if [ -n "$rootfs_pid" ]; then
  step "waiting for debootstrap"
  if ! wait "$rootfs_pid"; then
    rootfs_pid=""
    tail -30 "$cache/debootstrap.log" >&2
    echo "test-install: debootstrap failed (log: $cache/debootstrap.log)" >&2
    exit 1
  fi
  rootfs_pid=""
  mv "$rootfs.tmp" "$rootfs"
  echo "$stamp" >"$cache/bookworm.stamp"
  step "debootstrap done"
fi

nspawn_pid=""
leader=""
in_container() { timeout "${TIMEOUT:-60}" nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
journal() {
  [ -n "$leader" ] || return 0
  echo "---- journal (peerjs units) ----" >&2
  TIMEOUT=20 in_container journalctl --no-pager -o short-monotonic -u peerjs.socket -u peerjs.service -n 200 >&2 || true
  echo "---- journal (everything, last 60 lines) ----" >&2
  TIMEOUT=20 in_container journalctl --no-pager -o short-monotonic -n 60 >&2 || true
}
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "test-install: FAILED (status $status)" >&2
    journal
    [ -f "$work/nspawn.log" ] && { echo "---- systemd-nspawn output (last 40 lines) ----" >&2; tail -40 "$work/nspawn.log" >&2; }
  fi
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null || true  # nspawn asks the container's systemd to power off
    for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # so that cleanup (and the journal) also runs under `timeout`
fail() { echo "test-install: $*" >&2; exit 1; }

step "boot the container"
systemd-nspawn --boot --register=no --keep-unit --volatile=overlay --private-network \
  --machine="peerjs-test-$$" -D "$rootfs" --bind-ro="$work:/mnt/peerjs" >"$work/nspawn.log" 2>&1 </dev/null &
nspawn_pid=$!
# The container's init is the child of systemd-nspawn running systemd (nspawn forks helpers
# first, which exit).
for _ in $(seq 1 60); do
  leader=$(ps -o pid=,comm= --ppid "$nspawn_pid" 2>/dev/null | awk '$2 == "systemd" { print $1; exit }' || true)
  [ -n "$leader" ] && [ -e "/proc/$leader/ns/mnt" ] && break
  leader=""
  kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited"
  sleep 1
done
[ -n "$leader" ] || fail "no container init after 60 s"
state=""
for _ in $(seq 1 90); do
  state=$(TIMEOUT=10 in_container systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
case "$state" in running|degraded) ;; *) fail "the container's systemd is not up after 90 s (state: ${state:-none})" ;; esac
step "container up (pid $leader, $state)"
[ "$state" = degraded ] && { TIMEOUT=10 in_container systemctl --failed --no-pager || true; }

step "apt-get install ./$debname"
TIMEOUT=300 in_container env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "/mnt/peerjs/$debname"
in_container test -x /usr/sbin/peerjs || fail "/usr/sbin/peerjs not installed"
in_container test -f /usr/share/man/man8/peerjs.8.gz || fail "man page not installed"
in_container test -f /usr/share/doc/peerjs/examples/peerjs-cluster.conf.example || fail "the clustering drop-in example is not installed"
for user in _peerjs-supervisor _peerjs _peerjs-auth _peerjs-policy _peerjs-cluster; do
  in_container getent passwd "$user" >/dev/null || fail "user $user not created"
done
in_container stat -c '%U:%G %a %F' /run/peerjs/empty
[ "$(in_container stat -c '%U %a' /run/peerjs/empty)" = "root 555" ] || fail "/run/peerjs/empty is not root-owned 0555"
in_container systemctl is-enabled peerjs.socket
[ "$(in_container systemctl is-enabled peerjs.service 2>/dev/null || true)" != enabled ] || fail "peerjs.service is enabled; only the socket should be"
in_container systemd-analyze verify --man=no /lib/systemd/system/peerjs.socket /lib/systemd/system/peerjs.service

step "systemctl start peerjs.socket; PeerJS client -> OPEN"
in_container systemctl start peerjs.socket
in_container python3 /mnt/peerjs/ws-open.py 127.0.0.1 9000 first-peer | tee "$work/open1"
grep -q '"type":"OPEN"' "$work/open1" || fail "no OPEN"
for _ in $(seq 1 20); do
  [ "$(in_container systemctl is-active peerjs.service || true)" = active ] && break
  sleep 0.5
done
in_container systemctl is-active peerjs.service >/dev/null || fail "peerjs.service not active"

step "processes, users, confinement"
in_container ps -eo pid,ppid,user:20,args --sort=pid | grep -E 'peerjs|PID' | grep -v ' ps ' || true
supervisor=$(in_container systemctl show -P MainPID peerjs.service)
[ -n "$supervisor" ] && [ "$supervisor" != 0 ] || fail "no supervisor MainPID"
broker=$(in_container ps -o pid= --ppid "$supervisor" | head -1 | tr -d ' ')
[ -n "$broker" ] || fail "no broker under supervisor $supervisor"
[ "$(in_container ps -o user= -p "$supervisor" | tr -d ' ')" = _peerjs-supervisor ] || fail "supervisor is not _peerjs-supervisor"
[ "$(in_container ps -o user= -p "$broker" | tr -d ' ')" = _peerjs ] || fail "broker is not _peerjs"
for pid in "$supervisor" "$broker"; do
  echo "-- /proc/$pid/status:"
  in_container grep -E '^(Name|Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters|Threads):' "/proc/$pid/status"
  echo "   root: $(in_container readlink "/proc/$pid/root")"
done
broker_uid=$(in_container id -u _peerjs)
in_container grep -qE "^Uid:[[:space:]]+$broker_uid[[:space:]]+$broker_uid[[:space:]]+$broker_uid[[:space:]]+$broker_uid$" "/proc/$broker/status" || fail "broker uids are not all _peerjs"
in_container grep -qE '^Seccomp:[[:space:]]+2$' "/proc/$broker/status" || fail "broker has no seccomp filter"
in_container grep -qE '^NoNewPrivs:[[:space:]]+1$' "/proc/$broker/status" || fail "broker without no_new_privs"
filters() { in_container sed -n 's/^Seccomp_filters:[[:space:]]*//p' "/proc/$1/status"; }
[ "$(filters "$broker")" -gt "$(filters "$supervisor")" ] || fail "the broker has no seccomp filter of its own (only the unit's)"
[ "$(in_container readlink "/proc/$broker/root")" = /run/peerjs/empty ] || fail "broker is not chrooted into /run/peerjs/empty"
# Capabilities are per thread: every thread of the broker must have none left.
for task in $(in_container ls "/proc/$broker/task"); do
  caps=$(in_container sed -n 's/^Cap\(Prm\|Eff\|Amb\):[[:space:]]*//p' "/proc/$broker/task/$task/status" | sort -u)
  [ "$caps" = 0000000000000000 ] || fail "broker thread $task still holds capabilities: $caps"
done
echo "broker: uid _peerjs, chroot /run/peerjs/empty, NoNewPrivs 1, Seccomp 2 ($(filters "$broker") filters, unit's $(filters "$supervisor")), no capabilities in $(in_container ls "/proc/$broker/task" | wc -l) threads"

step "a new key in /etc/peerjs/peerjs.conf; systemctl reload peerjs"
in_container sh -c 'echo "key = reloaded" >> /etc/peerjs/peerjs.conf'
in_container systemctl reload peerjs
in_container systemctl is-active peerjs.service >/dev/null || fail "peerjs.service not active after reload"
reloaded=""
for _ in $(seq 1 20); do
  in_container journalctl --no-pager -u peerjs.service | grep -q 'configuration reloaded' && { reloaded=yes; break; }
  sleep 0.5
done
[ -n "$reloaded" ] || fail "the supervisor did not log 'configuration reloaded'"
in_container python3 /mnt/peerjs/ws-open.py 127.0.0.1 9000 second-peer reloaded | tee "$work/open2"
grep -q '"type":"OPEN"' "$work/open2" || fail "no OPEN with the reloaded key"

step "peerjs-metrics.socket: not enabled by the package; enabled, GET /metrics answers"
[ "$(in_container systemctl is-enabled peerjs-metrics.socket 2>/dev/null || true)" != enabled ] || fail "peerjs-metrics.socket is enabled by the package"
# systemd refuses to start a socket whose service is running: stop it, start the socket, start it.
in_container systemctl stop peerjs.service
in_container systemctl enable --now peerjs-metrics.socket
in_container systemctl start peerjs.service
in_container python3 /mnt/peerjs/ws-open.py 127.0.0.1 9000 metrics-peer reloaded >/dev/null || fail "no OPEN after the restart with the metrics socket"
metrics=""
for _ in $(seq 1 20); do
  metrics=$(in_container python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode())' 2>/dev/null || true)
  echo "$metrics" | grep -q '^peerjs_peers{key="reloaded"}' && break
  sleep 0.5
done
echo "$metrics" | grep -E '^peerjs_(peers|resident_memory_bytes|restarts_total)' || true
echo "$metrics" | grep -q '^peerjs_peers{key="reloaded"}' || fail "GET /metrics on the metrics socket has no broker series"
echo "$metrics" | grep -q '^peerjs_resident_memory_bytes{process="broker"}' || fail "GET /metrics has no resident memory of the broker"
in_container systemctl disable --now peerjs-metrics.socket

step "systemctl stop peerjs"
TIMEOUT=60 in_container systemctl stop peerjs
[ "$(in_container systemctl is-active peerjs.service || true)" = inactive ] || fail "peerjs.service still running after stop"
! in_container pgrep -u _peerjs,_peerjs-supervisor,_peerjs-auth,_peerjs-policy,_peerjs-cluster >/dev/null || fail "peerjs processes left after stop"

step "apt-get purge peerjs"
TIMEOUT=120 in_container env DEBIAN_FRONTEND=noninteractive apt-get purge -y peerjs
left=$(in_container sh -c 'ls -d /usr/sbin/peerjs /etc/peerjs /run/peerjs /lib/systemd/system/peerjs.* /lib/systemd/system/peerjs-* /etc/systemd/system/*/peerjs.* /etc/systemd/system/*/peerjs-* /usr/lib/tmpfiles.d/peerjs.conf /usr/lib/sysusers.d/peerjs.conf /usr/share/man/man8/peerjs.8.gz /usr/share/doc/peerjs /var/lib/systemd/deb-systemd-helper-enabled/*peerjs* /var/lib/systemd/deb-systemd-helper-masked/*peerjs* 2>/dev/null' || true)
[ -z "$left" ] || fail "left behind after purge: $left"
in_container sh -c '! dpkg -s peerjs >/dev/null 2>&1' || fail "dpkg still knows peerjs after purge"
! in_container pgrep -u _peerjs,_peerjs-supervisor,_peerjs-auth,_peerjs-policy,_peerjs-cluster >/dev/null || fail "peerjs processes left after purge"
[ "$(in_container systemctl is-active peerjs.socket || true)" != active ] || fail "peerjs.socket still listening after purge"
echo "(the system users stay, as Debian policy asks: $(in_container sh -c 'getent passwd _peerjs-supervisor _peerjs _peerjs-auth _peerjs-policy _peerjs-cluster | cut -d: -f1 | tr "\n" " "'))"
step "PASS"
