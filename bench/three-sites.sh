#!/usr/bin/env bash
# Throughput of three sites with synchronous replication and durable acks:
# on the local cluster (deploy/local), one `firebreak bench ingest` per site,
# all three at once, each against its own site's node; every node commits
# through the one primary, which waits for a synchronous standby on another
# site before the commit returns. Per run: acked msgs/s of the three summed,
# send-to-ack latency, the nodes' mean commit time (from their /metrics), and
# whether the Patroni leader and its timeline stayed the same (a false
# failover under load would change them). At the end min/median/max over the
# runs, as text and as JSON (summary.json).
#
#   bench/three-sites.sh [--runs N] [--duration SEC] [--out DIR] [-- BENCH ARGS...]
#
# Brings the cluster up when none runs, and then takes it down at the end; a
# cluster already up is used and left up. Run as root, after make. Exits 1
# when a bench lost, duplicated or refused anything, or the leader changed.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
duration=10
out=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "three-sites.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

F=$PWD/deploy/local/fbcluster
BIN=${FIREBREAK_BIN:-build/firebreak}
export FIREBREAK_BIN=$BIN
[ -x "$BIN" ] || { echo "three-sites.sh: no $BIN; build first (make -j2)" >&2; exit 2; }
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$out" ] || out=bench/results/three-sites-$(date +%Y%m%d-%H%M%S)-$commit
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { printf '%s three-sites: %s\n' "$(date +%T)" "$*"; }

started=0
cleanup() { if [ "$started" = 1 ]; then $F down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
if ! $F primary >/dev/null 2>&1; then
    say "no cluster running: bringing one up"
    started=1
    $F up >"$out/up.log" 2>&1 || { cat "$out/up.log" >&2; exit 1; }
fi
$F wait full --timeout 120 >/dev/null

# leader site and its timeline, "SITE:TIMELINE"
leader() {
    $F status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
tl = [x.get("timeline") for x in s["sites"] if x["site"] == s["leader"]]
print("%s:%s" % (s["leader"], tl[0] if tl else "?"))'
}

# one line per site: "commits commit_seconds messages" from the node's /metrics
metrics() {
    local a
    for a in $($F sites | tr ',' ' '); do
        curl -sf --max-time 5 "http://$a/metrics" | awk '
            $1 == "firebreak_commits_total" { c = $2 }
            $1 == "firebreak_commit_seconds_total" { t = $2 }
            $1 == "firebreak_messages_stored_total" { m = $2 }
            END { printf "%s %s %s\n", c + 0, t + 0, m + 0 }'
    done
}

status=0
for run in $(seq 1 "$runs"); do
    before=$(leader)
    metrics >"$out/run$run-metrics-before.txt"
    pids=()
    i=0
    for a in $($F sites | tr ',' ' '); do
        i=$((i + 1))
        timeout $((duration + 120)) "$BIN" bench ingest --server "$a" --senders 30 --rooms 15 \
            --members 2 --duration "${duration}s" --window 64 --seed "$((run * 10 + i))" \
            --json "$out/run$run-site$i.json" --quiet "${extra[@]}" \
            >"$out/run$run-site$i.log" 2>&1 &
        pids+=($!)
    done
    rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    metrics >"$out/run$run-metrics-after.txt"
    after=$(leader)
    echo "{\"leader_before\": \"$before\", \"leader_after\": \"$after\", \"bench_ok\": $([ $rc = 0 ] && echo true || echo false)}" \
        >"$out/run$run-cluster.json"
    if [ "$before" != "$after" ]; then
        say "run $run: the leader changed under load ($before -> $after): a false failover"
        status=1
    fi
    if [ $rc != 0 ]; then
        say "run $run: a bench failed (see $out/run$run-site*.log)"
        status=1
    fi
done

python3 - "$out" "$runs" "$commit" <<'EOF'
import glob, json, statistics, sys
out, runs, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for r in range(1, runs + 1):
    sites = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/run{r}-site*.json"))]
    if not sites:
        print(f"run {r}: no bench result (see {out}/run{r}-site*.log)")
        continue
    cl = json.load(open(f"{out}/run{r}-cluster.json"))
    b = [l.split() for l in open(f"{out}/run{r}-metrics-before.txt")]
    a = [l.split() for l in open(f"{out}/run{r}-metrics-after.txt")]
    commits = sum(float(y[0]) - float(x[0]) for x, y in zip(b, a))
    secs = sum(float(y[1]) - float(x[1]) for x, y in zip(b, a))
    msgs = sum(float(y[2]) - float(x[2]) for x, y in zip(b, a))
    rows.append({
        "run": r,
        "acked_per_s": sum(s["acked_per_s"] for s in sites),
        "acked_per_s_by_site": [round(s["acked_per_s"]) for s in sites],
        "ack_p50_ms": max(s["send_to_ack_ms"]["p50"] for s in sites),
        "ack_p99_ms": max(s["send_to_ack_ms"]["p99"] for s in sites),
        "commit_ms": 1000 * secs / commits if commits else None,
        "msgs_per_commit": msgs / commits if commits else None,
        "lost": sum(s["lost"] for s in sites),
        "duplicated": sum(s["duplicated"] for s in sites),
        "errors": sum(s["errors"] for s in sites),
        "passed": all(s["passed"] for s in sites) and cl["bench_ok"],
        "leader_before": cl["leader_before"],
        "leader_after": cl["leader_after"],
    })

def mmm(k):
    v = sorted(x[k] for x in rows if x[k] is not None)
    return {"min": v[0], "median": statistics.median(v), "max": v[-1]} if v else None

summary = {"commit": commit, "runs": rows,
           "acked_per_s": mmm("acked_per_s"), "ack_p50_ms": mmm("ack_p50_ms"),
           "ack_p99_ms": mmm("ack_p99_ms"), "commit_ms": mmm("commit_ms"),
           "msgs_per_commit": mmm("msgs_per_commit"),
           "false_failovers": sum(x["leader_before"] != x["leader_after"] for x in rows)}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
for x in rows:
    print("run %d: %7.0f acked msgs/s (%s), ack p50 %.1f ms p99 %.1f ms, commit %.2f ms "
          "(%.0f msgs each), lost %d dup %d errors %d, leader %s -> %s, %s" % (
              x["run"], x["acked_per_s"], " + ".join(map(str, x["acked_per_s_by_site"])),
              x["ack_p50_ms"], x["ack_p99_ms"], x["commit_ms"] or 0, x["msgs_per_commit"] or 0,
              x["lost"], x["duplicated"], x["errors"], x["leader_before"], x["leader_after"],
              "passed" if x["passed"] else "FAILED"))
for k, unit in (("acked_per_s", "msgs/s"), ("ack_p50_ms", "ms"), ("ack_p99_ms", "ms"),
                ("commit_ms", "ms"), ("msgs_per_commit", "")):
    m = summary[k]
    if m:
        print("%-16s min %.1f  median %.1f  max %.1f %s" % (k, m["min"], m["median"], m["max"], unit))
print("false failovers: %d of %d runs" % (summary["false_failovers"], len(rows)))
EOF
say "results in $out"
exit $status
