#!/usr/bin/env python3
"""Summarizes a bench/run.sh results folder as Markdown: every figure with
min / median / max over the rounds, and its ratio to the machine's own limit
measured in the same round (the ratio is taken per round, then summarized).

usage: bench/summarize.py RESULTS_DIR
SPDX-License-Identifier: MIT
"""
import glob
import json
import os
import re
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def mmm(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-", "-", "-"
    return (fmt(min(values)), fmt(statistics.median(values)), fmt(max(values)))


def f0(v):
    return f"{v:,.0f}"


def f2(v):
    return f"{v:.2f}"


def pct(v):
    return f"{100 * v:.1f}%"


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


# scenario prefix -> figures: (label, path in the result, format, limit path or None)
FIGURES = {
    "ingest": [
        ("acked msg/s", ("acked_per_s",), f0, ("sqlite", "rows_per_s")),
        ("deliveries/s", ("deliveries_per_s",), f0, None),
        ("send->ack p50 ms", ("send_to_ack_ms", "p50"), f2, None),
        ("send->ack p99 ms", ("send_to_ack_ms", "p99"), f2, None),
        ("send->ack p99.9 ms", ("send_to_ack_ms", "p999"), f2, None),
        ("send->ack max ms", ("send_to_ack_ms", "max"), f2, None),
        ("send->delivery p99 ms", ("send_to_delivery_ms", "p99"), f2, None),
    ],
    "fanout": [
        ("deliveries/s", ("deliveries_per_s",), f0, ("fanout", "deliveries_per_s")),
        ("acked msg/s", ("acked_per_s",), f0, None),
        ("send->delivery p50 ms", ("send_to_delivery_ms", "p50"), f2, None),
        ("send->delivery p99 ms", ("send_to_delivery_ms", "p99"), f2, None),
        ("send->delivery p99.9 ms", ("send_to_delivery_ms", "p999"), f2, None),
        ("send->delivery max ms", ("send_to_delivery_ms", "max"), f2, None),
        ("node RSS peak KiB", ("node", "rss_peak_kib"), f0, None),
        ("slow readers closed", ("counters", "slow_closed"), f0, None),
    ],
    "kakao": [
        ("acked msg/s", ("acked_per_s",), f0, ("echo", "msgs_per_s")),
        ("deliveries/s", ("deliveries_per_s",), f0, ("fanout_single", "deliveries_per_s")),
        ("send->delivery p50 ms", ("send_to_delivery_ms", "p50"), f2, None),
        ("send->delivery p99 ms", ("send_to_delivery_ms", "p99"), f2, None),
        ("send->delivery p99.9 ms", ("send_to_delivery_ms", "p999"), f2, None),
        ("send->delivery max ms", ("send_to_delivery_ms", "max"), f2, None),
        ("send->ack p99 ms", ("send_to_ack_ms", "p99"), f2, None),
        ("reconnect->synced p99 ms", ("reconnect_to_synced_ms", "p99"), f2, None),
    ],
    "connections": [
        ("connections held", ("counters", "connected"), f0, None),
        ("node RSS bytes/conn", ("node", "rss_per_conn_bytes"), f0, None),
        ("node allocator bytes/conn", ("node", "memory_per_conn_bytes"), f0, None),
    ],
    "slow-readers": None,  # same figures as fanout
}
LIMITS = [
    ("fsync/s (4 KiB append + fdatasync)", ("fsync", "per_s")),
    ("SQLite rows/s (batches of 1000, WAL, FULL)", ("sqlite", "rows_per_s")),
    ("loopback echo msg/s", ("echo", "msgs_per_s")),
    ("loopback fan-out deliveries/s", ("fanout", "deliveries_per_s")),
    ("loopback fan-out deliveries/s, 1 per write", ("fanout_single", "deliveries_per_s")),
]


def figures_for(name):
    for prefix, figs in FIGURES.items():
        if name.startswith(prefix):
            return figs if figs is not None else FIGURES["fanout"]
    return []


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    meta = load(os.path.join(d, "meta.json")) if os.path.exists(os.path.join(d, "meta.json")) else {}
    limits = {}
    for p in glob.glob(os.path.join(d, "limits-*.json")):
        limits[int(re.search(r"limits-(\d+)\.json$", p).group(1))] = load(p)
    results = {}
    for p in sorted(glob.glob(os.path.join(d, "*-[0-9]*.json"))):
        m = re.search(r"/([a-z0-9-]+)-(\d+)\.json$", p)
        if not m or m.group(1) == "limits":
            continue
        results.setdefault(m.group(1), {})[int(m.group(2))] = load(p)

    print(f"# Benchmark results ({os.path.basename(os.path.normpath(d))})\n")
    if meta:
        print(f"commit {meta.get('commit')}, {meta.get('date')}; {meta.get('cores')} cores "
              f"({meta.get('cpu')}), {meta.get('memory_mib')} MiB, kernel {meta.get('kernel')}; "
              f"data on {meta.get('data_fs')}; load average at start {meta.get('load_at_start')}"
              f"{'; QUICK run (not figures)' if meta.get('quick') else ''}.\n")
    print("## Machine limits (same rounds)\n")
    print("| limit | min | median | max |")
    print("|---|---:|---:|---:|")
    for label, path in LIMITS:
        lo, med, hi = mmm([get(l, *path) for l in limits.values()], f0)
        print(f"| {label} | {lo} | {med} | {hi} |")
    print()
    for name, runs in results.items():
        any_run = next(iter(runs.values()))
        print(f"## {name}\n")
        print(f"`{any_run.get('command', '?')}` (+ `--server ADDR --node-pid PID --json FILE`), "
              f"{len(runs)} runs\n")
        print("| figure | min | median | max | ratio to limit (min / median / max) |")
        print("|---|---:|---:|---:|---|")
        for label, path, fmt, lpath in figures_for(name):
            vals = [get(r, *path) for r in runs.values()]
            lo, med, hi = mmm(vals, fmt)
            ratio = ""
            if lpath:
                rs = []
                for k, r in runs.items():
                    v, lim = get(r, *path), get(limits.get(k, {}), *lpath)
                    if v is not None and lim:
                        rs.append(v / lim)
                rlo, rmed, rhi = mmm(rs, pct)
                ratio = f"{rlo} / {rmed} / {rhi} of {'.'.join(lpath)}"
            print(f"| {label} | {lo} | {med} | {hi} | {ratio} |")
        bad = {k: sum((r.get(k) or 0) for r in runs.values())
               for k in ("lost", "duplicated", "extra", "content_mismatch", "unchecked", "errors")}
        passed = sum(1 for r in runs.values() if r.get("passed"))
        print(f"\nchecks over all runs: passed {passed}/{len(runs)}; "
              + ", ".join(f"{k} {v}" for k, v in bad.items()) + "\n")


if __name__ == "__main__":
    main()
