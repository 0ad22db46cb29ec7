#!/usr/bin/env bash
# Measures the local cluster's failover mechanics without any traffic: bring-up
# time; for each fault of the current primary's site (kill, burn, partition,
# pause) the seconds until a new leader, until commits complete again (a
# synchronous standby streams), until Patroni names that standby (failover-ready),
# and until the faulted site is back and streaming after its remedy; and that no
# faulted primary takes the leader key back afterwards (Patroni 3.0.2's etcd3
# bug, docs/deploy-local.md). Prints one line per event and exits non-zero if
# any step times out or the leader changes after a remedy.
# usage: tests/drill/failover-times.sh [--runs N] [-- UP_ARGS...]   (root; default runs 3, up --no-nodes)
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/../.."
F=deploy/local/fbcluster
runs=3
up_args=(--no-nodes)
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=$2; shift 2 ;;
    --) shift; up_args=("$@"); break ;;
    *) echo "usage: $0 [--runs N] [-- UP_ARGS...]" >&2; exit 2 ;;
    esac
done
trap '$F down >/dev/null 2>&1 || true' EXIT
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
fail=0
# timed T0 CMD...: seconds from T0 until CMD succeeded, or "timeout"
timed() {
    local t0=$1
    shift
    if "$@" >/dev/null; then el "$t0"; else echo timeout; fi
}

t=$(now)
$F up "${up_args[@]}" >/dev/null 2>&1 || { echo "up failed"; $F status || true; exit 1; }
echo "up: $(el "$t") s"

# fault NAME CMD REMEDY: times one fault of the primary's site and its remedy
fault() {
    local name=$1 cmd=$2 remedy=$3 p t leader writable sync newp back after
    $F wait full --timeout 120 >/dev/null
    p=$($F primary)
    t=$(now)
    $F "$cmd" "$p" 2>/dev/null
    leader=$(timed "$t" $F wait leader --exclude "$p" --timeout 90 --interval 0.1)
    writable=$(timed "$t" $F wait writable --exclude "$p" --timeout 30 --interval 0.1)
    sync=$(timed "$t" $F wait sync --exclude "$p" --timeout 30 --interval 0.1)
    newp=$($F primary || echo none)
    t=$(now)
    $F "$remedy" "$p" 2>/dev/null
    back=$(timed "$t" $F wait full --timeout 600 --interval 0.1)
    case "$leader$writable$sync$back" in *timeout*) fail=1 ;; esac
    sleep 3
    after=$($F primary || echo none)
    [ "$after" = "$newp" ] || fail=1
    printf '%-9s site %s: new leader site %s %6s s | writable %6s s | sync key %6s s | %s: streaming again %6s s | leader after: site %s%s\n' \
        "$name" "$p" "$newp" "$leader" "$writable" "$sync" "$remedy" "$back" "$after" \
        "$([ "$after" = "$newp" ] || echo '  LEADER CHANGED AFTER REMEDY')"
}

# How long the isolated primary keeps running as a primary once cut off.
partition_demote() {
    local p t demoted
    $F wait full --timeout 120 >/dev/null
    p=$($F primary)
    t=$(now)
    $F partition "$p" 2>/dev/null
    demoted=$(timed "$t" $F wait demoted --site "$p" --timeout 60 --interval 0.1)
    [ "$demoted" != timeout ] || fail=1
    echo "partition site $p: the isolated primary demoted itself after $demoted s"
    $F heal "$p" 2>/dev/null
}

for _ in $(seq "$runs"); do fault kill kill revive; done
fault burn burn revive
for _ in $(seq "$runs"); do partition_demote; done
for _ in $(seq "$runs"); do fault partition partition heal; done
for _ in $(seq "$runs"); do fault pause pause resume; done
exit $fail
