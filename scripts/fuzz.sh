#!/bin/sh
# Coverage-guided fuzzing of the addon's C code that reads peer input
# (fuzz/*.c, libFuzzer): builds each harness with clang
# -fsanitize=fuzzer,address,undefined against the Node-API-free sources in
# src/native/c, then runs each for SECONDS (default 180).
#
#   sh scripts/fuzz.sh [seconds] [harness...]     e.g. sh scripts/fuzz.sh 60 vring-rx
#   FUZZ_RUNS=20000 sh scripts/fuzz.sh            a fixed number of runs instead of a time
#
# The seeds in fuzz/corpus/<harness> are read, never written: new inputs go to
# build/fuzz/corpus/<harness>, crashes to build/fuzz/crash-<harness>-*. Copy a
# small input that found something into fuzz/corpus/<harness> with the fix.
# Exit status: 0 when every harness ran clean, else that of the first failure.
set -eu
cd "$(dirname "$0")/.."
secs="${1:-180}"
[ $# -gt 0 ] && shift
cc="${CC:-clang}"
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz.sh: $cc not found (install clang, with libFuzzer)" >&2
  exit 127
fi
out=build/fuzz
mkdir -p "$out"
harnesses="${*:-$(cd fuzz && ls *.c | sed 's/\.c$//')}"
# Sources a harness may need: only the Node-API-free ones (headers are included directly).
srcs="src/native/c/vring-core.c"
flags="-g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc/native/c -Ifuzz"
status=0
for h in $harnesses; do
  echo "== $h: build"
  # shellcheck disable=SC2086
  "$cc" $flags -o "$out/$h" "fuzz/$h.c" $srcs
  mkdir -p "$out/corpus/$h" "fuzz/corpus/$h"
  if [ -n "${FUZZ_RUNS:-}" ]; then limit="-runs=$FUZZ_RUNS"; else limit="-max_total_time=$secs"; fi
  echo "== $h: run ($limit)"
  rc=0
  "$out/$h" "$limit" -timeout=10 -rss_limit_mb=1024 -max_len=16384 -print_final_stats=1 \
    -artifact_prefix="$out/crash-$h-" "$out/corpus/$h" "fuzz/corpus/$h" 2>"$out/$h.log" || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$out/$h.log" >&2
    echo "fuzz.sh: $h failed (exit $rc); log in $out/$h.log, reproducer in $out/crash-$h-*" >&2
    [ "$status" -eq 0 ] && status=$rc
  else
    grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$out/$h.log" | sed "s/^/   /"
  fi
done
exit "$status"
