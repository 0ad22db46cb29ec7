#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 for the tests in DIR (created if needed,
# initdb on first use) on 127.0.0.1 and a free port, with its unix socket
# inside DIR, and prints its connection string on stdout. Running it again
# on a stopped DIR restarts the same cluster on the same port. Speed over
# safety: fsync is off; nothing here may hold data anyone wants to keep.
# As root, the server runs as the `postgres` user (PostgreSQL refuses root).
# usage: tests/pg-up.sh DIR [postgres -c setting ...]   e.g. -c synchronous_standby_names=x
# With FIREBREAK_PG_STANDBY_OF=PORT, a new DIR is a streaming standby of the
# test server on 127.0.0.1:PORT (pg_basebackup -R) instead of a new cluster.
# SPDX-License-Identifier: MIT
set -eu
DIR=${1:?usage: tests/pg-up.sh DIR [-c name=value ...]}
shift
PGBIN=${FIREBREAK_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || { echo "pg-up: no PostgreSQL at $PGBIN (set FIREBREAK_PG_BIN)" >&2; exit 2; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ] && [ -n "${FIREBREAK_PG_STANDBY_OF:-}" ]; then
  as_pg "$PGBIN/pg_basebackup" -D "$DIR/data" -R -X stream -h 127.0.0.1 \
    -p "$FIREBREAK_PG_STANDBY_OF" -U fbtest --no-sync --checkpoint=fast > "$DIR/initdb.log" 2>&1 ||
    { cat "$DIR/initdb.log" >&2; exit 2; }
elif [ ! -f "$DIR/data/PG_VERSION" ]; then
  as_pg "$PGBIN/initdb" -D "$DIR/data" -U fbtest --auth=trust --no-sync -E UTF8 --locale=C \
    > "$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 2; }
fi
extra="$*"
start() { # port
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 20 start -o \
    "-c listen_addresses=127.0.0.1 -p $1 -c unix_socket_directories=$DIR -c fsync=off \
     -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB \
     -c log_min_messages=warning -c log_checkpoints=off $extra" > /dev/null
}
if [ -f "$DIR/port" ]; then
  port=$(cat "$DIR/port")
  start "$port" || { tail -20 "$DIR/server.log" >&2; exit 2; }
else
  ok=0
  for _ in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 40000))
    ss -ltnH "sport = :$port" 2>/dev/null | grep -q . && continue
    if start "$port"; then ok=1; break; fi
  done
  [ $ok -eq 1 ] || { tail -20 "$DIR/server.log" >&2; exit 2; }
  echo "$port" > "$DIR/port"
fi
echo "host=127.0.0.1 port=$port user=fbtest dbname=postgres sslmode=disable gssencmode=disable"
