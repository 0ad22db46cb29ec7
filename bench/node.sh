#!/usr/bin/env bash
# Starts or stops one Firebreak node for a benchmark: a copy of the binary
# (so a rebuild cannot pull it from under perf), a fresh data dir, open
# registration, fast argon2 settings (registration only: the measured
# traffic never hashes a password), listening on loopback only.
#   bench/node.sh start DIR [serve args...]   prints "ADDR PID"
#   bench/node.sh stop DIR                    SIGTERM by its PID, SIGKILL after 10 s
# Environment: FIREBREAK_BIN (build/firebreak), FB_LISTEN (127.0.0.1:0),
# FB_NODE_ENV (extra environment for the node, e.g. "MALLOC_ARENA_MAX=2").
# SPDX-License-Identifier: MIT
set -euo pipefail
cmd=${1:?usage: bench/node.sh start|stop DIR [serve args...]}
dir=${2:?usage: bench/node.sh start|stop DIR [serve args...]}
shift 2

case "$cmd" in
start)
  listen=${FB_LISTEN:-127.0.0.1:0}
  case "$listen" in 127.*) ;; *) echo "node.sh: listen on loopback only (got $listen)" >&2; exit 2 ;; esac
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "${FIREBREAK_BIN:-build/firebreak}" "$dir/firebreak"
  # shellcheck disable=SC2086
  env ${FB_NODE_ENV:-} "$dir/firebreak" serve --listen "$listen" --data-dir "$dir/data" \
    --ready-file "$dir/ready" --registration open --set argon2_opslimit=1 \
    --set argon2_memlimit_kib=8 --log-level warn "$@" 2>"$dir/node.log" &
  echo $! >"$dir/pid"
  for _ in $(seq 200); do
    if [ -s "$dir/ready" ] && grep -q . "$dir/ready"; then
      echo "$(head -1 "$dir/ready") $(cat "$dir/pid")"
      exit 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.05
  done
  echo "node.sh: the node did not start; see $dir/node.log" >&2
  exit 1
  ;;
stop)
  [ -f "$dir/pid" ] || exit 0
  pid=$(cat "$dir/pid")
  # only the node this script started: its command line names our copy
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/firebreak"; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/pid"
  ;;
*)
  echo "usage: bench/node.sh start|stop DIR [serve args...]" >&2
  exit 2
  ;;
esac
