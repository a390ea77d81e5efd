#!/usr/bin/env bash
# Fuzzes every parser a client or another process can reach (README, "Fuzz it"): builds the
# libFuzzer targets of Sources/Fuzz into .build-fuzz/ (debug, -sanitize=fuzzer) and runs each one
# for SECONDS on a copy of its seed corpus Tests/Fuzz/corpus/TARGET (the committed corpus never
# grows). Exits 1 when any target crashes, hangs or runs out of memory, after printing the input
# that did it; the run's corpora, logs and crash files stay in .build-fuzz/run/TARGET/.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]     default: 30 seconds each, every target
#
# A crash file replays in a plain debug build, under a debugger too:
#   swift run fuzz-ipc .build-fuzz/run/fuzz-ipc/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh

seconds="${1:-30}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(fuzz-http fuzz-envelope fuzz-ipc fuzz-files fuzz-jwt)
scratch=.build-fuzz
# FUZZING swaps each target's replaying main for libFuzzer's driver (Sources/Fuzz/FuzzSupport).
flags=(--scratch-path "$scratch" -c debug -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING)

start=$SECONDS
mkdir -p "$scratch"
for target in "${targets[@]}"; do
  [ -d "Tests/Fuzz/corpus/$target" ] || { echo "fuzz.sh: no target $target (no Tests/Fuzz/corpus/$target)" >&2; exit 64; }
  echo "fuzz.sh: building $target"
  if ! swift build "${flags[@]}" --product "$target" >"$scratch/build-$target.log" 2>&1; then
    grep -E 'error|warning' "$scratch/build-$target.log" | head -n 40 || tail -n 40 "$scratch/build-$target.log"
    echo "fuzz.sh: building $target failed" >&2
    exit 1
  fi
done
bin="$(swift build "${flags[@]}" --show-bin-path)"
echo "fuzz.sh: built in $((SECONDS - start)) s"

shopt -s nullglob
failed=()
for target in "${targets[@]}"; do
  run="$scratch/run/$target"
  rm -rf "$run"
  mkdir -p "$run/corpus"
  cp Tests/Fuzz/corpus/"$target"/* "$run/corpus/"
  # The Swift runtime's backtracer would catch the crash signal before libFuzzer could save
  # the input; -timeout makes a hang a failure too.
  status=0
  SWIFT_BACKTRACE=enable=no "$bin/$target" "$run/corpus" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$run/" >"$run/log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run/log")
  found=("$run"/crash-* "$run"/timeout-* "$run"/oom-* "$run"/leak-*)
  if [ "$status" -ne 0 ] || ((${#found[@]})); then
    failed+=("$target")
    echo "fuzz.sh: $target FAILED (exit $status) after ${execs:-?} inputs:"
    grep -a -m 5 -E 'Fatal error|Precondition failed|Assertion failed|ERROR: libFuzzer' "$run/log" || true
    echo "fuzz.sh: the end of $run/log:"
    tail -n 25 "$run/log"
    for file in "${found[@]}"; do
      echo "fuzz.sh: $file ($(wc -c <"$file") bytes), base64: $(base64 -w0 "$file")"
      od -A d -c "$file" | head -n 16
    done
  else
    echo "fuzz.sh: $target ok: ${execs:-?} inputs in ${seconds} s (${rate:-?}/s), corpus $(ls "$run/corpus" | wc -l) inputs"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in ${failed[*]}; replay with: swift run TARGET FILE" >&2
fi
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
