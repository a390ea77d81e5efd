#!/usr/bin/env bash
# Tests the peer directory's SQL (Sources/Cluster/DirectorySchema.swift, docs/cluster.md) against
# a scratch PostgreSQL (scripts/pg-scratch.sh) on 127.0.0.1: the migration runner, peerjs_claim
# (granted / taken / moved / limit, expiry, races between sessions), release, refresh, sweep,
# loadDirectory, dropInstance, the relay rows and the NOTIFY payload limit.
#
#   scripts/test-directory-sql.sh
#
# The SQL is not copied: it is extracted from DirectorySchema.swift's literals, so what runs here
# is what the role sends. Prints a PASS or FAIL line per check; exits 1 on any FAIL, 2 when it
# could not run, 124 when it ran out of time (every psql is bounded, the whole run too).
set -euo pipefail
cd "$(dirname "$0")/.."

# The whole run is bounded: re-run under timeout(1) once.
if [ -z "${TEST_DIRECTORY_SQL_BOUNDED:-}" ]; then
  export TEST_DIRECTORY_SQL_BOUNDED=1
  exec timeout -k 10 180 "$0" "$@"
fi

swift=Sources/Cluster/DirectorySchema.swift
scratch="$(pwd)/scripts/pg-scratch.sh"
fail() { echo "test-directory-sql.sh: $*" >&2; exit 2; }

tmp="$(mktemp -d)"
pgdir="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$scratch" kill "$pgdir" 2>/dev/null || true
  rm -rf "$tmp" "$pgdir"
}
trap cleanup EXIT
trap 'exit 124' TERM INT

# ---- The SQL, from the Swift file -------------------------------------------------------------

# const NAME: the text of `    static let NAME = "…"` (one line, no escapes).
const() {
  local text
  text="$(sed -n "s/^    static let $1 = \"\\(.*\\)\"\$/\\1/p" "$swift")"
  [ -n "$text" ] && [ "$(printf '%s\n' "$text" | wc -l)" = 1 ] || fail "no one-line constant $1 in $swift"
  [[ "$text" != *\\* ]] || fail "constant $1 holds a backslash (an escape this script does not undo)"
  printf '%s' "$text"
}
# block NAME: the text of the raw literal `    private static let NAME = #"""` … `    """#`,
# without the four spaces of indentation Swift strips.
block() {
  awk -v opener="    private static let $1 = #\"\"\"" '
    $0 == opener { on = 1; found = 1; next }
    on && $0 == "    \"\"\"#" { on = 0; closed = 1; next }
    on { if ($0 != "" && substr($0, 1, 4) != "    ") bad = 1; if (index($0, "\\#")) bad = 1; print substr($0, 5) }
    END { if (!found || !closed || bad) exit 1 }' "$swift" || fail "no clean raw literal $1 in $swift"
}

migrations="$(sed -n 's/^    static let migrations: \[String\] = \[\(.*\)\]$/\1/p' "$swift" | tr -d ' ')"
[ -n "$migrations" ] || fail "no 'static let migrations: [String] = [...]' line in $swift"
IFS=, read -r -a names <<<"$migrations"
known=${#names[@]}
for i in "${!names[@]}"; do
  [ "${names[$i]}" = "v$((i + 1))" ] || fail "migrations[$i] is ${names[$i]}, expected v$((i + 1))"
  block "${names[$i]}" >"$tmp/v$((i + 1)).sql"
done
setversion_line="$(grep -A1 'static func setVersion(_ version: Int) -> String {' "$swift" | sed -n '2s/^ *"\(.*\)"$/\1/p')"
[[ "$setversion_line" == *'\(version)'* ]] || fail "setVersion's body is not one string literal with \\(version)"
setversion="${setversion_line//\\(version)/$known}"
for name in bootstrap lockSchema currentVersion claim release refresh sweep dropInstance loadDirectory \
  putRelay takeRelay notify; do
  value="$(const "$name")" # (an assignment, so that const's exit 2 stops the script)
  printf -v "sql_$name" '%s' "$value"
done

# ---- The server ----------------------------------------------------------------------------------

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
password="$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
started=""
for _ in 1 2 3 4 5 6 7 8; do
  port=$((55432 + RANDOM % 2000))
  port_free "$port" || continue
  if "$scratch" start "$pgdir" "$port" "$password" 2>"$tmp/start.err"; then
    started=1
    break
  fi
done
[ -n "$started" ] || { cat "$tmp/start.err" >&2; fail "could not start a scratch server"; }
export PGHOST=127.0.0.1 PGPORT="$port" PGUSER=peerjs PGDATABASE=peerjs PGPASSWORD="$password" \
  PGCONNECT_TIMEOUT=5 PGOPTIONS="-c statement_timeout=30s"

failures=0
pass() { echo "PASS $1"; }
failed() { echo "FAIL $1"; failures=$((failures + 1)); }
# check NAME EXPECTED ACTUAL
check() {
  if [ "$3" = "$2" ]; then pass "$1"; else failed "$1: expected '$2', got '$3'"; fi
}

# psql_ ARGS…: psql, bounded, unaligned, tuples only, stop at the first error.
psql_() { timeout 30 psql -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }
# q SQL…: each SQL in its own implicit transaction (its own now()), after the statements of
# DirectorySchema prepared under their names. Prints the rows (or the error on stderr).
{
  for name in claim release refresh sweep dropInstance loadDirectory putRelay takeRelay notify; do
    var="sql_$name"
    printf 'PREPARE %s AS %s;\n' "$name" "${!var}"
  done
} >"$tmp/prepare.sql"
q() {
  local args=(-f "$tmp/prepare.sql") s
  for s in "$@"; do args+=(-c "$s"); done
  psql_ "${args[@]}"
}
# claim KEY ID INSTANCE TOKENHEX LIMIT [EXPIRY]
claim() { q "EXECUTE claim('$1', '$2', '$3', '\\x$4', $5, ${6:-30})"; }
# row KEY ID: instance|token hex|seconds since refreshed (rounded), or nothing.
row() {
  q "SELECT instance, encode(token_hash, 'hex'), round(extract(epoch FROM now() - refreshed))::int
     FROM peerjs_peers WHERE key = '$1' AND id = '$2'"
}
reset() { q "DELETE FROM peerjs_peers" "DELETE FROM peerjs_relay"; }

# ---- The migration runner ------------------------------------------------------------------------
# As the role runs it (DirectorySchema's comment): one transaction; each migration sent as one
# simple-protocol query (\gexec sends the cell with PQexec, several statements and all).
{
  echo "BEGIN;"
  echo "$sql_lockSchema;"
  echo "$sql_bootstrap;"
  echo "SELECT ($sql_currentVersion) AS v \\gset"
  echo "SELECT :v > $known AS too_new \\gset"
  echo "\\if :too_new"
  echo "DO \$\$ BEGIN RAISE EXCEPTION 'peerjs_schema version is newer than this build knows ($known)'; END \$\$;"
  echo "\\endif"
  for ((v = 1; v <= known; v++)); do
    echo "SELECT :v < $v AS need \\gset"
    echo "\\if :need"
    echo "\\set migration \`cat $tmp/v$v.sql\`"
    echo "SELECT :'migration' \\gexec"
    echo "\\endif"
  done
  echo "$setversion;"
  echo "COMMIT;"
} >"$tmp/migrate.psql"
migrate() { psql_ -f "$tmp/migrate.psql" >/dev/null 2>"$tmp/migrate.err.$1"; }

# Two migrators at once: the advisory lock makes the second wait, then find the version set.
migrate 1 & m1=$!
migrate 2 & m2=$!
pids+=("$m1" "$m2")
rc1=0 rc2=0
wait "$m1" || rc1=$?
wait "$m2" || rc2=$?
check "migrate: two concurrent runners both succeed" "0 0" "$rc1 $rc2"
[ "$rc1$rc2" = 00 ] || cat "$tmp"/migrate.err.* >&2
check "migrate: schema version is $known (one row)" "$known|1" "$(q "SELECT max(version), count(*) FROM peerjs_schema")"
check "migrate: tables and function exist, owned by peerjs (no superuser)" "3|f" \
  "$(q "SELECT (SELECT count(*) FROM pg_tables WHERE tablename IN ('peerjs_peers', 'peerjs_relay', 'peerjs_schema') AND tableowner = 'peerjs')
         + (SELECT count(*) FROM pg_proc WHERE proname = 'peerjs_claim') - 1, rolsuper FROM pg_roles WHERE rolname = current_user")"
rc=0
migrate 3 || rc=$?
check "migrate: a third run is a no-op" "0|$known|1" "$rc|$(q "SELECT max(version), count(*) FROM peerjs_schema")"
q "UPDATE peerjs_schema SET version = $((known + 1))"
rc=0
migrate 4 || rc=$?
if ((rc != 0)) && grep -q "newer than this build" "$tmp/migrate.err.4"; then
  pass "migrate: a database of a newer version is refused"
else
  failed "migrate: a database of a newer version is refused (rc $rc: $(cat "$tmp/migrate.err.4"))"
fi
q "UPDATE peerjs_schema SET version = $known"

# ---- peerjs_claim: the cases ---------------------------------------------------------------------
reset
check "claim: new id -> granted" "granted" "$(claim k a i1 01 0)"
check "claim: the row" "i1|01|0" "$(row k a)"
check "claim: live row, other instance, other token -> taken" "taken" "$(claim k a i2 02 0)"
check "claim: taken changes nothing" "i1|01" "$(row k a | cut -d'|' -f1,2)"
check "claim: live row, own instance -> granted" "granted" "$(claim k a i1 01 0)"
q "UPDATE peerjs_peers SET refreshed = now() - interval '10 seconds' WHERE key = 'k' AND id = 'a'"
check "claim: live row, other instance, same token -> moved:i1" "moved:i1" "$(claim k a i2 01 0)"
check "claim: moved row belongs to i2, refreshed" "i2|01|0" "$(row k a)"
check "claim: own row, another token -> taken, token kept (a second client of the same instance)" "taken|i2|01" \
  "$(claim k a i2 03 0)|$(row k a | cut -d'|' -f1,2)"
check "claim: the same id under another key is another row" "granted" "$(claim k2 a i1 01 0)"
check "claim: expiry under 1 s is an error" "ERROR" \
  "$(claim k z i1 01 0 0 2>&1 | grep -o '^ERROR' || true)"

# Expiry: live while refreshed > now() - expiry.
q "UPDATE peerjs_peers SET refreshed = now() - interval '29 seconds' WHERE key = 'k' AND id = 'a'"
check "expiry: refreshed 29 s ago (expiry 30) is live -> taken" "taken" "$(claim k a i3 09 0)"
q "UPDATE peerjs_peers SET refreshed = now() - interval '30 seconds' WHERE key = 'k' AND id = 'a'"
check "expiry: refreshed 30 s ago (expiry 30) is expired -> taken over by another token, the stalled owner told (moved:i2)" "moved:i2" "$(claim k a i3 09 0)"
check "expiry: the row was taken over" "i3|09|0" "$(row k a)"
q "UPDATE peerjs_peers SET refreshed = now() - interval '31 seconds' WHERE key = 'k' AND id = 'a'"
check "expiry: an expired row of another instance is taken over as moved:OLD, same token or not" "moved:i3" "$(claim k a i4 09 0)"
q "UPDATE peerjs_peers SET refreshed = now() - interval '31 seconds' WHERE key = 'k' AND id = 'a'"
check "expiry: an expired row of its own instance is granted" "granted" "$(claim k a i4 07 0)"

# Limit: live rows of all keys and instances, checked for new (absent or expired) ids only.
reset
q "INSERT INTO peerjs_peers (key, id, instance, token_hash) VALUES
     ('L', 'a', 'i1', '\\x0a'), ('L', 'b', 'i1', '\\x0b'), ('L2', 'c', 'i2', '\\x0c')" \
  "INSERT INTO peerjs_peers (key, id, instance, token_hash, refreshed) VALUES ('L', 'e', 'i2', '\\x0e', now() - interval '60 seconds')"
check "limit: 3 live (2 keys, 2 instances), limit 3, new id -> limit" "limit" "$(claim L d i1 0d 3)"
check "limit: nothing inserted" "" "$(row L d)"
check "limit: limit 4 -> granted" "granted" "$(claim L d i1 0d 4)"
check "limit: own re-claim is not limited" "granted" "$(claim L a i1 0a 1)"
check "limit: a move is not limited" "moved:i1" "$(claim L b i3 0b 1)"
check "limit: a taken id answers taken, not limit" "taken" "$(claim L b i4 ff 1)"
check "limit: an expired row counts as new -> limit" "limit" "$(claim L e i3 01 4)"
check "limit: ... and not as live (4 live, limit 5) -> taken over (moved:i2)" "moved:i2" "$(claim L e i3 01 5)"
check "limit: counts every key (5 live, limit 5, new key)" "limit" "$(claim L3 x i1 01 5)"
check "limit: 0 is no limit" "granted" "$(claim L3 x i1 01 0)"

# ---- The other statements --------------------------------------------------------------------------
reset
claim r a i1 01 0 >/dev/null
q "EXECUTE release('r', 'a', 'i2')"
check "release: another instance's release deletes nothing" "i1" "$(row r a | cut -d'|' -f1)"
q "EXECUTE release('r', 'a', 'i1')"
check "release: the owner's release deletes the row" "" "$(row r a)"

reset
q "INSERT INTO peerjs_peers (key, id, instance, token_hash, refreshed) VALUES
     ('k', 'a', 'i1', '\\x01', now() - interval '20 seconds'), ('k', 'b', 'i1', '\\x01', now() - interval '40 seconds'),
     ('k', 'c', 'i2', '\\x01', now() - interval '20 seconds'), ('k', 'd', 'i3', '\\x01', now() - interval '31 seconds')"
check "loadDirectory: live rows of the other instances" "i2|k|c" "$(q "EXECUTE loadDirectory('i1', 30)")"
check "loadDirectory: from i3" "i1|k|a
i2|k|c" "$(q "EXECUTE loadDirectory('i3', 30)" | sort)"
q "EXECUTE refresh('i1')"
check "refresh: every row of i1, only those" "a|0 b|0 c|20 d|31" \
  "$(q "SELECT id, round(extract(epoch FROM now() - refreshed))::int FROM peerjs_peers ORDER BY id" | paste -sd' ')"
q "EXECUTE dropInstance('i1')"
check "dropInstance: only i1's rows go" "c d" "$(q "SELECT id FROM peerjs_peers ORDER BY id" | paste -sd' ')"

reset
q "INSERT INTO peerjs_peers (key, id, instance, token_hash, refreshed) VALUES
     ('s', 'old', 'i1', '\\x01', now() - interval '61 seconds'), ('s', 'expired', 'i1', '\\x01', now() - interval '59 seconds'),
     ('s', 'live', 'i1', '\\x01', now())" \
  "INSERT INTO peerjs_relay (target, body, created) VALUES
     ('i1', '\\x01', now() - interval '61 seconds'), ('i1', '\\x02', now() - interval '59 seconds')"
check "sweep: (expiry 30) one peer row, one relay row deleted" "1|1" "$(q "EXECUTE sweep(30)")"
check "sweep: peers expired for less than one expiry stay" "expired live" "$(q "SELECT id FROM peerjs_peers ORDER BY id" | paste -sd' ')"
check "sweep: relay rows younger than 60 s stay" '\x02' "$(q "SELECT body FROM peerjs_relay")"

reset
seq="$(q "EXECUTE putRelay('i2', '\\xdeadbeef')")"
[[ "$seq" =~ ^[0-9]+$ ]] && pass "putRelay: returns seq ($seq)" || failed "putRelay: returns seq (got '$seq')"
check "takeRelay: another target gets nothing" "" "$(q "EXECUTE takeRelay($seq, 'i1')")"
check "takeRelay: the target gets the body" '\xdeadbeef' "$(q "EXECUTE takeRelay($seq, 'i2')")"
check "takeRelay: ... once" "" "$(q "EXECUTE takeRelay($seq, 'i2')")"

# ---- NOTIFY ------------------------------------------------------------------------------------------
notify_err() { q "EXECUTE notify('$1', $2)" 2>&1 >/dev/null | sed -n 's/^.*ERROR: *//p' | head -n 1; }
check "notify: 7999-byte payload is accepted" "" "$(notify_err peerjs.dir "repeat('x', 7999)")"
check "notify: 8000-byte payload is refused" "payload string too long" "$(notify_err peerjs.dir "repeat('x', 8000)")"
check "notify: the limit is bytes (3999 two-byte characters + 1 byte: accepted)" "" \
  "$(notify_err peerjs.dir "repeat('é', 3999) || 'x'")"
check "notify: the limit is bytes (4000 two-byte characters: refused)" "payload string too long" \
  "$(notify_err peerjs.dir "repeat('é', 4000)")"
check "notify: a 63-byte channel is accepted" "" "$(notify_err "$(printf 'c%.0s' {1..63})" "'x'")"
check "notify: a 64-byte channel is refused" "channel name too long" "$(notify_err "$(printf 'c%.0s' {1..64})" "'x'")"
got="$(q 'LISTEN "peerjs.i.Node-1"' "EXECUTE notify('peerjs.i.Node-1', repeat('y', 7999))" 2>&1 |
  sed -n 's/^Asynchronous notification "peerjs.i.Node-1" with payload "\(y*\)" received.*/\1/p')"
check "notify: a listener (quoted LISTEN, capitals) receives the 7999-byte payload whole" 7999 "${#got}"

# ---- Races -----------------------------------------------------------------------------------------
# wait_for SQL: until SQL returns t, at most 10 s.
wait_for() {
  local i
  for ((i = 0; i < 200; i++)); do
    [ "$(q "$1")" = t ] && return 0
    sleep 0.05
  done
  return 1
}
# race NAME SETUP FIRST_END TOKEN1 TOKEN2 EXPECT1 EXPECT2: session 1 claims id k/race as i1 in a
# transaction and holds it 1 s before FIRST_END (COMMIT or ROLLBACK); session 2 claims the same
# id as i2 meanwhile, must be seen waiting on a lock, and answers once session 1 ends.
# session OUT SQL…: like q, output (and errors) into OUT; for the background.
session() {
  local out="$1" args=(-f "$tmp/prepare.sql") s
  shift
  for s in "$@"; do args+=(-c "$s"); done
  psql_ "${args[@]}" >"$out" 2>&1
}
race() {
  local name="$1" setup="$2" end="$3" t1="$4" t2="$5" want1="$6" want2="$7" p1 p2 blocked=no
  reset
  [ -z "$setup" ] || q "$setup"
  session "$tmp/race1" "BEGIN" "EXECUTE claim('k', 'race', 'i1', '\\x$t1', 0, 30)" "SELECT 'slept' FROM pg_sleep(1)" "$end" &
  p1=$!
  pids+=("$p1")
  wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'SELECT ''slept''%' AND state = 'active')" ||
    failed "$name: session 1 never reached its sleep"
  session "$tmp/race2" "EXECUTE claim('k', 'race', 'i2', '\\x$t2', 0, 30)" &
  p2=$!
  pids+=("$p2")
  wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'EXECUTE claim%' AND wait_event_type = 'Lock')" &&
    blocked=yes
  wait "$p1" || true
  wait "$p2" || true
  check "$name" "$want1 / $want2 / waited: yes" \
    "$(grep -v slept "$tmp/race1" | paste -sd' ') / $(paste -sd' ' "$tmp/race2") / waited: $blocked"
}
race "race: new id, first commits -> granted / taken" "" COMMIT 01 02 granted taken
race "race: new id, first rolls back -> granted / granted" "" ROLLBACK 01 02 granted granted
race "race: new id, same token, first commits -> granted / moved:i1" "" COMMIT 01 01 granted moved:i1
race "race: expired row taken over by both -> moved:i0 / taken" \
  "INSERT INTO peerjs_peers (key, id, instance, token_hash, refreshed) VALUES ('k', 'race', 'i0', '\\x00', now() - interval '1 hour')" \
  COMMIT 01 02 moved:i0 taken
check "race: one row after the races" "1" "$(q "SELECT count(*) FROM peerjs_peers WHERE key = 'k' AND id = 'race'")"

# Many: 4 sessions claim the same 200 ids in the same order, released together by a barrier
# (an advisory lock they wait on); then all expire and they race again to take them over.
many() { # ROUND
  local round="$1" n k holder ps=()
  for ((k = 1; k <= 4; k++)); do
    {
      echo "SELECT pg_advisory_lock_shared(4242) \\g /dev/null"
      for ((n = 1; n <= 200; n++)); do
        echo "SELECT 'r$n', peerjs_claim('many', 'r$n', 'i$k-$round', '\\x0$k', 0, 30);"
      done
    } >"$tmp/many$k.sql"
  done
  psql_ -c "SELECT pg_advisory_lock(4242)" \
    -c "DO \$\$ BEGIN
          FOR i IN 1..500 LOOP
            EXIT WHEN (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted) >= 4;
            PERFORM pg_sleep(0.02);
          END LOOP;
        END \$\$" >/dev/null &
  holder=$!
  pids+=("$holder")
  wait_for "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted)" ||
    failed "many: the barrier was never held"
  for ((k = 1; k <= 4; k++)); do
    psql_ -f "$tmp/many$k.sql" >"$tmp/many$k.out" 2>&1 &
    ps+=($!)
    pids+=($!)
  done
  wait "$holder" || true
  for k in "${ps[@]}"; do wait "$k" || true; done
  local answers owners
  # Taking over an expired row of another session answers moved:OLD: that session got the row.
  sed -i 's/|moved:[^|]*$/|granted/' "$tmp"/many?.out
  answers="$(cat "$tmp"/many?.out | cut -d'|' -f2 | sort | uniq -c | awk '{ print $2 "=" $1 }' | paste -sd' ')"
  # How the grants fell between the sessions, to see that they raced (informative only).
  local spread
  spread="$(for ((k = 1; k <= 4; k++)); do grep -c '|granted$' "$tmp/many$k.out" || true; done | paste -sd/)"
  check "many (round $round): 4 × 200 racing claims -> 200 granted ($spread), 600 taken" "granted=200 taken=600" "$answers"
  # Each id's row belongs to the one session that was granted it.
  owners="$(for ((k = 1; k <= 4; k++)); do sed -n "s/^\(r[0-9]*\)|granted\$/\1|i$k-$round/p" "$tmp/many$k.out"; done | sort)"
  q "SELECT id || '|' || instance FROM peerjs_peers WHERE key = 'many'" | sort >"$tmp/rows"
  printf '%s\n' "$owners" >"$tmp/owners"
  check "many (round $round): one row per id (200), owned by the session granted it" "200 rows, 0 differ" \
    "$(wc -l <"$tmp/rows") rows, $(comm -3 "$tmp/owners" "$tmp/rows" | wc -l) differ$(comm -3 "$tmp/owners" "$tmp/rows" | head -n 3 | tr '\n\t' ' +')"
}
reset
many 1
q "UPDATE peerjs_peers SET refreshed = now() - interval '1 hour'"
many 2

echo
if ((failures)); then
  echo "test-directory-sql.sh: $failures FAIL (PostgreSQL $(q "SHOW server_version"), ${SECONDS} s)"
  exit 1
fi
echo "test-directory-sql.sh: all PASS (PostgreSQL $(q "SHOW server_version"), ${SECONDS} s)"
