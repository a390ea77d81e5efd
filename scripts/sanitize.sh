#!/usr/bin/env bash
# Runs the tests under the sanitizers (issue 16, README "Sanitizers"): AddressSanitizer over the
# protocol, IPC, broker, auth helper and process tests (the process tests spawn the ASan-built
# `peerjs` next to the test bundle, so supervisor, broker and auth helper run instrumented, the
# broker inside its seccomp filter), and ThreadSanitizer over the protocol, broker handler, IPC
# and auth helper tests. Each sanitizer builds into its own scratch folder (.build-asan/, .build-tsan/; debug,
# ~5-7 min cold each on 2 cores). Exits 1 when a test fails or any process printed a sanitizer
# report; the output is in .build-{asan,tsan}/sanitize-*.log.
#
#   scripts/sanitize.sh [address] [thread]      default: both
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh

kinds=("$@")
((${#kinds[@]})) || kinds=(address thread)

# What each sanitizer runs (swift test --filter, a regular expression over Target.Suite/test).
# The process tests are not run under ThreadSanitizer: its runtime makes calls (gettimeofday,
# getpid) that the broker's and the helper's seccomp filters refuse, and the unsandboxed code of
# those processes is NIO's, tested under TSan upstream. The process tests run under ASan one
# test at a time (--no-parallel): they check deadlines, and ASan slows every process 2-3x.
address_unit='^(PeerProtocolTests|IPCTests|BrokerTests|AuthHelperTests|PeerJSConfigurationTests|SandboxTests|ClusterTests)\.'
address_process='^(ProcessModelTests|SandboxProcessTests|TLSTests)\.'
thread_unit='^(PeerProtocolTests|BrokerTests|IPCTests|AuthHelperTests|PeerJSConfigurationTests|ClusterTests)\.'

failed=()
# run KIND SCRATCH NAME FILTER [swift test flags...]: one test run; a failure or any sanitizer
# report marks KIND failed and prints the report and the failed tests.
run() {
  local kind=$1 scratch=$2 name=$3 filter=$4
  shift 4
  local log="$scratch/sanitize-$name.log" status=0 start=$SECONDS
  PEERJS_PACKAGE_SUBSET="$subset" PEERJS_SANITIZER="$kind" ASAN_OPTIONS="halt_on_error=1:detect_leaks=0" TSAN_OPTIONS="halt_on_error=1" \
    swift test --skip-build --sanitize="$kind" --scratch-path "$scratch" --filter "$filter" "$@" \
    >"$log" 2>&1 || status=$?
  local reports summary
  reports=$(grep -cE '(ERROR: AddressSanitizer|WARNING: ThreadSanitizer|SUMMARY: [A-Za-z]+Sanitizer)' "$log" || true)
  summary=$(grep -E 'Test run with [0-9]+ test' "$log" | tail -n 1 || true)
  echo "sanitize.sh: $kind, $name tests: exit $status in $((SECONDS - start)) s, $reports sanitizer report line(s); $summary"
  if [ "$status" -ne 0 ] || [ "$reports" -ne 0 ]; then
    grep -nE -A 30 '(ERROR: AddressSanitizer|WARNING: ThreadSanitizer)' "$log" | head -n 120 || true
    grep -E '✘.*recorded an issue' "$log" | head -n 40 || true
    failed+=("$kind/$name")
  fi
}

for kind in "${kinds[@]}"; do
  case "$kind" in
    # The daemon subset leaves out the Hummingbird adapter and its tests (Package.swift).
    address) scratch=.build-asan subset=daemon ;;
    # Only the unit tests run under TSan: Package.swift's unit subset builds nothing else.
    thread) scratch=.build-tsan subset=unit ;;
    *) echo "sanitize.sh: unknown sanitizer $kind (address or thread)" >&2; exit 64 ;;
  esac
  mkdir -p "$scratch"
  start=$SECONDS
  echo "sanitize.sh: $kind: building into $scratch"
  if ! PEERJS_PACKAGE_SUBSET="$subset" swift build --build-tests --sanitize="$kind" --scratch-path "$scratch" >"$scratch/build.log" 2>&1; then
    grep -E 'error' "$scratch/build.log" | head -n 40 || tail -n 40 "$scratch/build.log"
    echo "sanitize.sh: $kind: build failed" >&2
    exit 1
  fi
  echo "sanitize.sh: $kind: built in $((SECONDS - start)) s"
  # halt_on_error: the first report ends the process, so a report cannot scroll past unseen.
  # Leak checking stays off: LeakSanitizer stops the world with ptrace at exit, which the
  # broker's and helper's seccomp filters refuse (Sources/CShim/sanitizers.c sets the same
  # defaults for the children, whose environment the supervisor does not pass on).
  case "$kind" in
    address)
      run address "$scratch" unit "$address_unit"
      run address "$scratch" process "$address_process" --no-parallel
      ;;
    thread) run thread "$scratch" unit "$thread_unit" ;;
  esac
done
if ((${#failed[@]})); then
  echo "sanitize.sh: FAILED: ${failed[*]} (full output in .build-asan/ and .build-tsan/sanitize-*.log)" >&2
  exit 1
fi
echo "sanitize.sh: clean under: ${kinds[*]}"
