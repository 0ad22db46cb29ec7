#!/usr/bin/env bash
# The three-site drill figures: runs the CI drill (tests/drill/run.sh: the
# local cluster from nothing, a SIGKILL of the primary's site and a partition
# of the primary's site, each under load and healed under load) several
# times, keeps every JSON report, and prints min/median/max of the write
# outage, the read outage of the surviving sites, the readers' wait, and the
# lost / duplicated / reordered counts over the runs (summary.json too).
#
#   bench/drills.sh [--runs N] [--out DIR]     (as root, after make)
#
# The drill's own settings come from tests/drill/run.sh's environment
# (DRILL_DURATION, DRILL_FAULT_AT, DRILL_HEAL_AFTER, DRILL_ARGS). Exits 1
# when any run failed; the runs after it still run.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
out=""
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "drills.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$out" ] || out=bench/results/drills-$(date +%Y%m%d-%H%M%S)-$commit
mkdir -p "$out"
out=$(cd "$out" && pwd)

status=0
for run in $(seq 1 "$runs"); do
    printf '%s drills: run %d of %d\n' "$(date +%T)" "$run" "$runs"
    if ! DRILL_OUT="$out/run$run" tests/drill/run.sh >"$out/run$run.log" 2>&1; then
        printf '%s drills: run %d FAILED (%s/run%d.log)\n' "$(date +%T)" "$run" "$out" "$run"
        status=1
    fi
done

python3 - "$out" "$runs" "$commit" <<'EOF'
import json, os, statistics, sys
sys.path.insert(0, "bench")
from summarize import get
out, runs, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3]

figures = [
    ("result", "result"),
    ("write outage s", "write_outage.ms"),
    ("first ack after the fault s", "write_outage.first_ack_after_fault_ms"),
    ("fault site's senders back s", "write_outage.fault_site_senders_back_ms"),
    ("read outage, surviving sites s", "read_outage.survivors_ms"),
    ("readers' wait, survivors s", "read_outage.readers_survivors_ms"),
    ("drill's own stall s", "drill_stall.ms"),
    ("acked", "acked"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("reordered", "reordered"),
    ("gaps", "gaps"),
]
summary = {"commit": commit, "runs": runs, "drills": {}}
for drill in ("kill", "partition"):
    reports = []
    for r in range(1, runs + 1):
        p = f"{out}/run{r}/{drill}.json"
        if os.path.exists(p):
            reports.append(json.load(open(p)))
    rows = {}
    print(f"{drill}: {len(reports)} of {runs} runs reported")
    for name, path in figures:
        vals = [get(j, *path.split(".")) for j in reports]
        if name == "result":
            rows[name] = vals
            print(f"  {name:32s} {' '.join(map(str, vals))}")
            continue
        each = [v / 1000.0 if name.endswith(" s") and v is not None else v for v in vals]
        nums = sorted(v for v in each if v is not None)
        if not nums:
            continue
        rows[name] = {"min": nums[0], "median": statistics.median(nums), "max": nums[-1],
                      "each": each}
        fmt = "%.2f" if name.endswith(" s") else "%d"
        print(f"  {name:32s} min {fmt % nums[0]}  median {fmt % statistics.median(nums)}"
              f"  max {fmt % nums[-1]}   each: {' '.join('-' if v is None else fmt % v for v in each)}")
    summary["drills"][drill] = rows
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
EOF
printf '%s drills: results in %s\n' "$(date +%T)" "$out"
exit $status
