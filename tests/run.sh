#!/usr/bin/env bash
# Runs every test program of one build (unit, integration, crash) and ends
# with one line "N passed, N failed" counting the individual test cases.
# usage: tests/run.sh BUILD_DIR    (e.g. build or build-san)
# SPDX-License-Identifier: MIT
set -u
BUILD=${1:-build}
export FIREBREAK_BIN="$BUILD/firebreak"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0
failed=0
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  echo "== $t"
  out=$(mktemp)
  timeout 600 "$t" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "!! $t exited with status $rc"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  rm -f "$out"
done
echo "$BUILD: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
