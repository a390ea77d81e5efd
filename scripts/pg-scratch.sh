#!/usr/bin/env bash
# A throwaway PostgreSQL server for the cluster tests and benchmarks (docs/cluster.md). Never for
# data anyone keeps: fsync, synchronous_commit and full_page_writes are off.
#
#   scripts/pg-scratch.sh start   DIR PORT PASSWORD   init DIR if new, then start (no-op if running)
#   scripts/pg-scratch.sh stop    DIR                 fast shutdown (no-op if not running)
#   scripts/pg-scratch.sh restart DIR                 fast shutdown, then start
#   scripts/pg-scratch.sh kill    DIR                 immediate shutdown (the next start recovers)
#
# Layout: DIR/data is the cluster, DIR/log the server log, DIR the socket directory
# (DIR/.s.PGSQL.PORT), DIR/.pg-scratch the marker that lets a later start reuse DIR.
# The server listens on 127.0.0.1:PORT only. Role `peerjs` (LOGIN, no superuser, no CREATEDB, no
# CREATEROLE) with PASSWORD (scram-sha-256; set again at every start, so PASSWORD always holds)
# owns database `peerjs`:
#   PGPASSWORD=PASSWORD psql -h 127.0.0.1 -p PORT -U peerjs peerjs
# The admin is superuser `postgres`, by the socket only, trusted:
#   psql -h DIR -p PORT -U postgres        (as root: runuser -u postgres -- psql …)
# Uses the newest /usr/lib/postgresql/*/bin. Run as root, the server runs as the `postgres` user
# and DIR is owned by it. Prints nothing on success; on failure a message (and the log's tail) on
# stderr and a non-zero exit. Every wait is bounded (pg_ctl -w -t 30).
set -euo pipefail

die() { echo "pg-scratch.sh: $*" >&2; exit 1; }
usage() {
  echo "usage: pg-scratch.sh start DIR PORT PASSWORD | stop DIR | restart DIR | kill DIR" >&2
  exit 64
}

(($# >= 2)) || usage
cmd="$1"
case "$cmd" in
  start) (($# == 4)) || usage ;;
  stop | restart | kill) (($# == 2)) || usage ;;
  *) usage ;;
esac

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/initdb" ] || die "no /usr/lib/postgresql/*/bin with initdb and pg_ctl"

# as_owner CMD…: runs CMD as the server's owner (postgres when we are root), from a directory
# it can enter (initdb and postgres complain about a cwd they cannot read).
if ((EUID == 0)); then
  id -u postgres >/dev/null 2>&1 || die "running as root but there is no postgres user"
  as_owner() { (cd / && runuser -u postgres -- "$@"); }
else
  as_owner() { (cd / && "$@"); }
fi

# run_logged WHAT CMD…: runs CMD as the owner, output captured; on failure prints it, the log's
# tail, and exits.
run_logged() {
  local what="$1" out
  shift
  if ! out="$(as_owner "$@" 2>&1)"; then
    echo "pg-scratch.sh: $what failed:" >&2
    [ -z "$out" ] || printf '%s\n' "$out" >&2
    if [ -f "$dir/log" ]; then
      echo "--- last lines of $dir/log:" >&2
      tail -n 20 "$dir/log" >&2
    fi
    exit 1
  fi
}

if [ "$cmd" = start ]; then mkdir -p "$2" 2>/dev/null || die "cannot create $2"; fi
[ -d "$2" ] || die "no directory $2"
dir="$(cd "$2" && pwd -P)"
data="$dir/data"

is_running() { as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; }

initialised() { [ -f "$dir/.pg-scratch" ] && [ -f "$data/PG_VERSION" ]; }

start() {
  local port="$1" password="$2"
  [[ "$port" =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 65535)) || die "PORT must be 1024..65535, not '$port'"
  [ -n "$password" ] || die "PASSWORD is empty"
  [[ "$dir" != *"'"* ]] || die "DIR must not hold a quote: $dir"
  # sun_path holds 107 bytes and a NUL.
  ((${#dir} + ${#port} + 10 <= 107)) || die "DIR is too long for a socket path (DIR/.s.PGSQL.PORT over 107 bytes): $dir"

  if [ ! -f "$dir/.pg-scratch" ]; then
    # Claim only an empty directory: the chown below and a later initdb must not touch
    # anything that is not ours.
    [ -z "$(ls -A "$dir")" ] || die "$dir is neither empty nor a pg-scratch directory (no .pg-scratch)"
    if ((EUID == 0)); then
      chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    as_owner touch "$dir/.pg-scratch" 2>/dev/null ||
      die "the server's user cannot write in $dir (is every parent directory searchable by it?)"
  fi

  if [ ! -f "$data/PG_VERSION" ]; then
    run_logged "initdb" "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C --no-sync
    # Later lines win: the settings follow the defaults initdb wrote.
    echo "include_if_exists = 'scratch.conf'" >>"$data/postgresql.conf"
    cat >"$data/pg_hba.conf" <<'EOF'
# pg-scratch.sh: the admin by the socket, everybody else by TCP with a password.
local   all   postgres                   trust
host    all   all        127.0.0.1/32    scram-sha-256
host    all   all        ::1/128         scram-sha-256
EOF
    if ((EUID == 0)); then chown postgres:postgres "$data/postgresql.conf" "$data/pg_hba.conf"; fi
  fi

  if is_running; then
    # Already up (idempotent start): only the password is set again below; the port is the
    # one it was started with.
    port="$(sed -n '4p' "$data/postmaster.pid")"
  else
    # Written at every start so that a new PORT takes effect.
    cat >"$data/scratch.conf" <<EOF
# pg-scratch.sh: scratch settings, rewritten at every start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 50
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    if ((EUID == 0)); then chown postgres:postgres "$data/scratch.conf"; fi
    run_logged "starting the server (port $port)" "$bin/pg_ctl" start -D "$data" -l "$dir/log" -w -t 30 -s
  fi

  # The role and its database, created if missing (a start after a failed one repairs them),
  # and the password, set at every start. The password goes on stdin, not on a command line.
  local quoted="${password//\'/\'\'}"
  local sql
  sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'peerjs') THEN
    CREATE ROLE peerjs LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
  END IF;
END \$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE peerjs PASSWORD '$quoted';
SELECT 'CREATE DATABASE peerjs OWNER peerjs' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'peerjs') \\gexec
"
  local out
  if ! out="$(printf '%s' "$sql" | as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres 2>&1)"; then
    echo "pg-scratch.sh: creating role and database peerjs failed:" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
}

case "$cmd" in
  start) start "$3" "$4" ;;
  stop)
    [ -f "$data/PG_VERSION" ] || die "$dir holds no server (no data/PG_VERSION)"
    if is_running; then run_logged "stopping the server" "$bin/pg_ctl" stop -D "$data" -m fast -w -t 30 -s; fi
    ;;
  kill)
    [ -f "$data/PG_VERSION" ] || die "$dir holds no server (no data/PG_VERSION)"
    if is_running; then run_logged "killing the server" "$bin/pg_ctl" stop -D "$data" -m immediate -w -t 30 -s; fi
    ;;
  restart)
    initialised || die "$dir is not a pg-scratch directory (run start first)"
    run_logged "restarting the server" "$bin/pg_ctl" restart -D "$data" -l "$dir/log" -m fast -w -t 30 -s
    ;;
esac
