#!/usr/bin/env bash
# The CI fault drill: brings up the local three-site cluster (deploy/local),
# runs `firebreak drill` (docs/drill.md) against all three sites through (a) a
# SIGKILL of the primary's site, revived under load, and (b) a partition of the
# primary's site, healed under load; tears the cluster down whatever happens.
# Exits with the first failing drill's status (4: lost or duplicated messages,
# docs/drill.md) or 1 when the cluster does not come up or back whole.
# Results: $DRILL_OUT/{kill,partition}.json; on failure (or with
# DRILL_KEEP_LOGS=1) the sites' logs are copied to $DRILL_OUT/logs.
# usage: tests/drill/run.sh     (as root, after make)
#   env: FIREBREAK_BIN (build/firebreak), DRILL_DURATION (60), DRILL_FAULT_AT (15),
#        DRILL_HEAL_AFTER (20: seconds after the fault), DRILL_OUT (build/drill),
#        FBCLUSTER_DIR (/tmp/fbcluster-drill), FBCLUSTER_UP_ARGS (extra words for up),
#        DRILL_ARGS (extra words for firebreak drill, e.g. "--rate 1000 --rooms 16"),
#        DRILL_ONLY (kill or partition: that drill alone), DRILL_KEEP_LOGS (1: keep logs)
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/../.."
F=deploy/local/fbcluster
export FIREBREAK_BIN=${FIREBREAK_BIN:-build/firebreak}
DURATION=${DRILL_DURATION:-60}
FAULT_AT=${DRILL_FAULT_AT:-15}
HEAL_AFTER=${DRILL_HEAL_AFTER:-20}
OUT=${DRILL_OUT:-build/drill}
export FBCLUSTER_DIR=${FBCLUSTER_DIR:-/tmp/fbcluster-drill}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

say() { printf '%s drill: %s\n' "$(date +%T)" "$*"; }
case "${DRILL_ONLY:-}" in
"" | kill | partition) ;;
*) say "DRILL_ONLY is kill or partition, not '$DRILL_ONLY'"; exit 2 ;;
esac

status=1
cleanup() {
    if { [ "$status" -ne 0 ] || [ "${DRILL_KEEP_LOGS:-0}" = 1 ]; } && [ -d "$FBCLUSTER_DIR" ]; then
        mkdir -p "$OUT/logs"
        $F status >"$OUT/logs/status.txt" 2>&1 || true
        for d in "$FBCLUSTER_DIR"/site*; do
            [ -d "$d" ] || continue
            mkdir -p "$OUT/logs/${d##*/}"
            cp "$d"/*.log "$d"/pglog/*.log "$OUT/logs/${d##*/}/" 2>/dev/null || true
        done
        [ "$status" -ne 0 ] && say "failed; logs in $OUT/logs"
    fi
    $F down >/dev/null 2>&1 || true
}
trap cleanup EXIT

F=$PWD/$F   # the drill runs the fault and heal commands through /bin/sh

"$FIREBREAK_BIN" drill --help >/dev/null 2>&1 ||
    { say "$FIREBREAK_BIN has no drill verb (make -j2)"; exit 1; }

# drill NAME FAULT REMEDY: traffic through every site for DURATION s; at
# FAULT_AT s `fbcluster FAULT P` hits the site P that held the primary when
# the drill started (the fault command checks, at fault time, that P still
# holds it, and fails the drill with exit 6 if not); REMEDY P follows
# HEAL_AFTER s after the fault, under load, so the rejoin is drilled too.
# shellcheck disable=SC2086  # DRILL_ARGS: extra words on purpose
drill() {
    local name=$1 fault=$2 remedy=$3 p
    p=$($F primary)
    say "($name) $fault of site $p, the primary's; $remedy after ${HEAL_AFTER} s"
    "$FIREBREAK_BIN" drill --sites "$($F sites)" --duration "${DURATION}s" \
        --fault-at "${FAULT_AT}s" --fault-site "$p" \
        --fault-cmd "test \"\$($F primary)\" = $p && $F $fault $p" \
        --heal-cmd "$F $remedy $p" --heal-at "+${HEAL_AFTER}s" --cmd-timeout 180s \
        --json "$OUT/$name.json" --quiet ${DRILL_ARGS:-}
    # the next drill starts from three whole sites
    $F wait full --timeout 120 >/dev/null || { say "the cluster is not whole after $name"; exit 1; }
}

say "up"
# shellcheck disable=SC2086  # extra words on purpose
$F up ${FBCLUSTER_UP_ARGS:-}
$F wait full --timeout 60 >/dev/null

case "${DRILL_ONLY:-}" in
"" | kill) drill kill kill revive ;;
esac
case "${DRILL_ONLY:-}" in
"" | partition) drill partition partition heal ;;
esac
status=0
say "passed"
