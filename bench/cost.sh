#!/usr/bin/env bash
# What one bench run costs the node, per message: a fresh node
# (bench/node.sh), one `firebreak bench` run against it, then the node's CPU
# time (utime + stime of all its threads, setup included) and, when perf is
# installed, its system calls, each divided by the messages it stored
# (firebreak_messages_stored_total). For comparing builds on a noisy
# machine: CPU and calls per message move less than rates do.
#
#   bench/cost.sh SCENARIO [bench args...]     e.g. bench/cost.sh kakao --rate 10000 --seed 1
#
# Environment: FIREBREAK_BIN (build/firebreak), COST_DIR (/var/tmp/fb-cost).
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
BIN=${FIREBREAK_BIN:-build/firebreak}
export FIREBREAK_BIN=$BIN
dir=${COST_DIR:-/var/tmp/fb-cost}
mkdir -p "$dir"
read -r addr pid < <(bench/node.sh start "$dir/node")
stat_pid=""
cleanup() {
  [ -n "$stat_pid" ] && kill -INT "$stat_pid" 2>/dev/null && wait "$stat_pid" 2>/dev/null
  bench/node.sh stop "$dir/node"
}
trap cleanup EXIT INT TERM
rm -f "$dir/syscalls.txt"
if command -v perf >/dev/null; then
  perf stat -x, -o "$dir/syscalls.txt" -p "$pid" -e 'syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64,syscalls:sys_enter_fdatasync,syscalls:sys_enter_futex' &
  stat_pid=$!
fi
rc=0
timeout 600 "$BIN" bench "$@" --server "$addr" --node-pid "$pid" --json "$dir/result.json" --quiet || rc=$?
read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
stored=$(curl -sf --max-time 5 "http://$addr/metrics" | awk '/^firebreak_messages_stored_total/ {print $2}')
if [ -n "$stat_pid" ]; then
  kill -INT "$stat_pid"
  wait "$stat_pid" 2>/dev/null || true
  stat_pid=""
fi
python3 - "$dir" "${stored:-0}" "$(( ut + st ))" "$(getconf CLK_TCK)" "$rc" <<'PY'
import json, os, sys
d, stored, ticks, hz, rc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.load(open(os.path.join(d, "result.json")))
cpu = ticks / hz
n = max(stored, 1)
line = "acked/s %.0f  send->delivery p99 %.1f ms  passed %s (exit %s) | node CPU %.1f s, %.2f us/msg" % (
    r["acked_per_s"], r["send_to_delivery_ms"]["p99"], r["passed"], rc, cpu, cpu * 1e6 / n)
calls = []
p = os.path.join(d, "syscalls.txt")
if os.path.exists(p):
    for l in open(p):
        f = l.strip().split(",")
        if len(f) > 2 and f[2].startswith("syscalls:sys_enter_") and f[0].isdigit():
            calls.append("%s %.2f" % (f[2][len("syscalls:sys_enter_"):], int(f[0]) / n))
if calls:
    line += " | calls/msg: " + " ".join(calls)
print(line)
PY
exit $rc
