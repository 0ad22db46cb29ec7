#!/usr/bin/env bash
# Runs the benchmark suite end to end: for each round, the machine's own
# limits (bench limits), then every scenario against a fresh node started
# for it alone, with its JSON result kept; at the end a summary with
# min/median/max over the rounds and each figure's ratio to the limit
# measured in the same round (bench/summarize.py, docs/benchmarks.md).
#
#   bench/run.sh [--runs N] [--out DIR] [--data-root DIR] [--quick] [NAME...]
#
# NAME picks scenarios of the suite below (default: all). --quick shortens
# every run (a check that the suite works, not figures). Every run is
# bounded: the bench's own --duration/--drain, and `timeout` around it.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
out=""
data_root=/var/tmp/fb-bench
quick=0
names=()
while [ $# -gt 0 ]; do
  case "$1" in
  --runs) runs=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --data-root) data_root=$2; shift 2 ;;
  --quick) quick=1; shift ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  -*) echo "run.sh: unknown flag $1" >&2; exit 2 ;;
  *) names+=("$1"); shift ;;
  esac
done

BIN=${FIREBREAK_BIN:-build/firebreak}
export FIREBREAK_BIN=$BIN
[ -x "$BIN" ] || { echo "run.sh: no $BIN; build first (make -j2)" >&2; exit 2; }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$out" ] || out=bench/results/$(date +%Y%m%d-%H%M%S)-$commit
mkdir -p "$out" "$data_root"

# name | bench arguments (the node's address and PID are added)
suite() {
  cat <<'SUITE'
ingest        ingest --duration 10s
ingest-room16 ingest --senders 16 --rooms 1 --members 16 --threads 2 --rate 60000 --duration 10s
fanout        fanout --members 1000 --rate 1000 --duration 10s
kakao-20k     kakao --rate 20000 --duration 10s
kakao-5k      kakao --rate 5000 --duration 10s
connections   connections --conns 19000 --procs 4 --duration 5s
slow-readers  fanout --members 1000 --rate 1000 --slow-readers 20 --duration 10s
SUITE
}

quickify() {
  sed -e 's/--duration [0-9]*s/--duration 3s --warmup 1s/' -e 's/--conns 19000/--conns 2000/'
}

selected() {
  local line name
  while read -r line; do
    name=${line%% *}
    if [ ${#names[@]} -eq 0 ] || printf '%s\n' "${names[@]}" | grep -qx "$name"; then
      echo "$line"
    fi
  done
}

node_dir=$data_root/node
cleanup() { bench/node.sh stop "$node_dir" || true; }
trap cleanup EXIT INT TERM

{
  echo "{"
  echo "  \"commit\": \"$commit\","
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\","
  echo "  \"cores\": $(nproc),"
  echo "  \"memory_mib\": $(( $(grep MemTotal /proc/meminfo | awk '{print $2}') / 1024 )),"
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"data_root\": \"$data_root\","
  echo "  \"data_fs\": \"$(df -T "$data_root" | awk 'NR==2 {print $1" "$2}')\","
  echo "  \"load_at_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"quick\": $quick"
  echo "}"
} >"$out/meta.json"

limits_args=""
[ $quick -eq 1 ] && limits_args="--duration 1s"
plan=$(suite | selected)
[ $quick -eq 1 ] && plan=$(echo "$plan" | quickify)
[ -n "$plan" ] || { echo "run.sh: no scenario named ${names[*]}" >&2; exit 2; }
echo "results in $out"

for r in $(seq "$runs"); do
  echo "== round $r/$runs: machine limits"
  # shellcheck disable=SC2086
  timeout 120 "$BIN" bench limits --data-dir "$data_root" --json "$out/limits-$r.json" \
    $limits_args | sed 's/^/   /'
  while read -r line; do
    name=${line%% *}
    args=${line#* }
    args=$(echo "$args" | sed 's/^ *//')
    read -r addr pid < <(bench/node.sh start "$node_dir")
    echo "== round $r/$runs: $name (node $addr pid $pid; load $(cut -d' ' -f1 /proc/loadavg))"
    rc=0
    # shellcheck disable=SC2086
    timeout 600 "$BIN" bench $args --server "$addr" --node-pid "$pid" \
      --json "$out/$name-$r.json" --quiet || rc=$?
    echo "   exit status $rc"
    bench/node.sh stop "$node_dir"
  done <<<"$plan"
done

python3 bench/summarize.py "$out" | tee "$out/summary.md"
