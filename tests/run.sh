#!/usr/bin/env bash
# Runs every test program of one build (unit, integration, crash) and ends
# with one line "N passed, N failed" counting the individual test cases.
# The store is tested on both backends: one throwaway PostgreSQL serves the
# whole run (tests/pg-up.sh, stopped at the end), test_store runs its cases
# on SQLite and on PostgreSQL, and every integration test runs twice, the
# second time with its nodes on PostgreSQL (FIREBREAK_TEST_STORE=postgres).
# usage: tests/run.sh BUILD_DIR    (e.g. build or build-san)
# FIREBREAK_TEST_PG="conninfo" uses a server of yours instead (each test
# makes and drops databases fbt_* on it; FIREBREAK_TEST_PG_DIR=its folder
# lets test_admin search its WAL for a password); FIREBREAK_TEST_PG=off
# skips PostgreSQL altogether (said loudly, for a machine without it).
# SPDX-License-Identifier: MIT
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
export FIREBREAK_BIN="$BUILD/firebreak"
export FIREBREAK_TEST_SCRIPTS="$HERE"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0
failed=0

# Private servers of the tests live under FIREBREAK_TEST_TMP too, so that
# one a killed test left behind is stopped here.
FIREBREAK_TEST_TMP=$(mktemp -d /tmp/fbtest-run-XXXXXX)
export FIREBREAK_TEST_TMP
chmod 0755 "$FIREBREAK_TEST_TMP" # the postgres user must reach the servers in it
cleanup() {
  for d in "$FIREBREAK_TEST_TMP"/pg*; do
    [ -d "$d" ] && "$HERE/pg-down.sh" "$d"
  done
  rm -rf "$FIREBREAK_TEST_TMP"
}
trap cleanup EXIT

pg=yes
if [ "${FIREBREAK_TEST_PG:-}" = off ]; then
  echo "!! FIREBREAK_TEST_PG=off: the PostgreSQL store is NOT tested in this run"
  unset FIREBREAK_TEST_PG
  pg=no
elif [ -z "${FIREBREAK_TEST_PG:-}" ]; then
  if conninfo=$("$HERE/pg-up.sh" "$FIREBREAK_TEST_TMP/pg-run"); then
    export FIREBREAK_TEST_PG="$conninfo"
    export FIREBREAK_TEST_PG_DIR="$FIREBREAK_TEST_TMP/pg-run"
  else
    echo "!! could not start a throwaway PostgreSQL (tests/pg-up.sh); set FIREBREAK_TEST_PG"
    failed=$((failed + 1))
    pg=no
  fi
fi

# run LABEL PROGRAM: runs one test program, adds its counts
run() {
  echo "== $1"
  out=$(mktemp)
  timeout 600 "$2" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "!! $1 exited with status $rc"
    f=1
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  rm -f "$out"
}

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run "$t" "$t"
  if [ $pg = yes ] && [ -f "$HERE/integration/$(basename "$t").c" ]; then
    FIREBREAK_TEST_STORE=postgres run "$t (nodes on postgres)" "$t"
  fi
done
echo "$BUILD: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
