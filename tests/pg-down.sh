#!/usr/bin/env bash
# Stops the throwaway PostgreSQL that tests/pg-up.sh started in DIR, by the
# PID in its own postmaster.pid (checked against its data folder), and
# removes DIR unless --keep is given (to start it again with pg-up.sh).
# usage: tests/pg-down.sh DIR [--keep]
# SPDX-License-Identifier: MIT
set -u
DIR=${1:?usage: tests/pg-down.sh DIR [--keep]}
KEEP=${2:-}
pidfile="$DIR/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  pid=$(head -1 "$pidfile")
  datadir=$(sed -n 2p "$pidfile")
  # Only our own postmaster: its PID file names this data folder, and so
  # does the process behind that PID.
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
     tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$datadir"; then
    kill -INT "$pid" 2>/dev/null # fast shutdown: roll back sessions, checkpoint
    # Gone, or a zombie waiting for init to reap it (it has exited).
    alive() { [ -r "/proc/$pid/stat" ] && ! awk '{exit $3 == "Z" ? 0 : 1}' "/proc/$pid/stat"; }
    for _ in $(seq 1 300); do
      alive || break
      sleep 0.05
    done
    if alive; then
      echo "pg-down: postmaster $pid did not stop; sending SIGQUIT" >&2
      kill -QUIT "$pid" 2>/dev/null
      sleep 1
      alive && kill -KILL "$pid" 2>/dev/null
    fi
  fi
fi
[ "$KEEP" = "--keep" ] || rm -rf "$DIR"
