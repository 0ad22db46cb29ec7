#!/usr/bin/python3
"""Read-only views of the local three-site cluster for deploy/local/fbcluster:
`status` (per site: processes, partition, etcd member, Patroni role, replication,
node /health), `wait` (poll until a condition holds and print how long it took)
and `primary` (the site holding Patroni's leader key in etcd). It probes over
HTTP from the host (198.18.0.1) and never changes anything.
Runs on Debian's /usr/bin/python3 with the standard library only.
SPDX-License-Identifier: MIT
"""
import argparse
import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

SITES = (1, 2, 3)
SCOPE = "fbcluster"
NAMESPACE = "/service"
DCS = os.environ.get("FBCLUSTER_DCS", "etcd")
PROBE_TIMEOUT = float(os.environ.get("FBCTL_PROBE_TIMEOUT", "1.0"))


def addr(n):
    return "198.18.%d.1" % n


def http_json(url, body=None, timeout=PROBE_TIMEOUT):
    """GET (or POST body) url; returns (http status, decoded JSON or None), (None, None) when unreachable."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            code = r.status
    except urllib.error.HTTPError as e:  # Patroni answers 503 with a JSON body on some endpoints
        raw, code = e.read(), e.code
    except (OSError, ValueError):
        return None, None
    try:
        return code, json.loads(raw.decode() or "null")
    except ValueError:
        return code, None


# ---- probes: each returns a plain dict, never raises ----

def probe_procs(n):
    ns = "fbsite%d" % n
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    if r.returncode != 0:
        return {"netns": False, "count": 0, "stopped": 0}
    pids = r.stdout.split()
    stopped = 0
    for p in pids:
        try:
            with open("/proc/%s/stat" % p) as f:
                # the state is the first field after the parenthesised command name
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    stopped += 1
        except OSError:
            pass
    def has_table(name):
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", name],
                              capture_output=True).returncode == 0
    return {"netns": True, "count": len(pids), "stopped": stopped,
            "partitioned": has_table("fbpartition"), "silent": has_table("fbsilent")}


def probe_etcd(n):
    code, h = http_json("http://%s:2379/health" % addr(n))
    if code is None:
        return {"reachable": False, "healthy": False}
    out = {"reachable": True, "healthy": bool(h) and h.get("health") == "true"}
    code, st = http_json("http://%s:2379/v3/maintenance/status" % addr(n), body={})
    if st and "header" in st:
        out["member_id"] = st["header"].get("member_id")
        out["is_leader"] = st.get("leader") == st["header"].get("member_id")
        out["raft_term"] = int(st.get("raftTerm", 0))
    return out


def probe_patroni(n):
    code, p = http_json("http://%s:8008/patroni" % addr(n))
    if code is None or not isinstance(p, dict):
        return {"reachable": False}
    p["reachable"] = True
    return p


def probe_node(n):
    code, h = http_json("http://%s:8080/health" % addr(n))
    return {"reachable": code is not None, "ok": code == 200 and bool(h) and h.get("status") == "ok",
            "health": h}


def etcd_leader_key():
    """The member name in Patroni's leader key, read with quorum from any site; None if no key or no quorum.
    Patroni keeps its keys in etcd's v2 store (FBCLUSTER_DCS=etcd) or its v3 store (etcd3)."""
    path = "%s/%s/leader" % (NAMESPACE, SCOPE)
    for n in SITES:
        if DCS == "etcd3":
            key = base64.b64encode(path.encode()).decode()
            code, r = http_json("http://%s:2379/v3/kv/range" % addr(n), body={"key": key})
            if code == 200 and isinstance(r, dict):
                kvs = r.get("kvs") or []
                return base64.b64decode(kvs[0]["value"]).decode() if kvs else None
        else:
            code, r = http_json("http://%s:2379/v2/keys%s?quorum=true" % (addr(n), path))
            if code == 200 and isinstance(r, dict):
                return r.get("node", {}).get("value")
            if code == 404 and isinstance(r, dict) and r.get("errorCode") == 100:  # key not found
                return None
    return None


def snapshot(with_procs=True):
    """Everything at once, probed in parallel so a paused site costs one timeout, not many."""
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
        for n in SITES:
            jobs[("etcd", n)] = ex.submit(probe_etcd, n)
            jobs[("patroni", n)] = ex.submit(probe_patroni, n)
            jobs[("node", n)] = ex.submit(probe_node, n)
            if with_procs:
                jobs[("procs", n)] = ex.submit(probe_procs, n)
        jobs["leader"] = ex.submit(etcd_leader_key)
        res = {k: f.result() for k, f in jobs.items()}
    leader_name = res["leader"]
    leader = int(leader_name[4:]) if leader_name and leader_name.startswith("site") else None
    lp = res[("patroni", leader)] if leader else {}
    repl = {r.get("application_name"): r for r in (lp.get("replication") or [])}
    lead_loc = (lp.get("xlog") or {}).get("location")
    sites = []
    for n in SITES:
        p = res[("patroni", n)]
        if not p.get("reachable"):
            role = "down"
        elif n == leader and p.get("role") == "master":
            role = "leader"
        elif p.get("role") == "master":
            role = "primary-without-lock"  # lost the key but not yet demoted
        elif p.get("sync_standby"):
            role = "sync_standby"
        else:
            role = "replica"
        s = {"site": n, "address": addr(n), "etcd": res[("etcd", n)], "role": role,
             "pg_state": p.get("state"), "timeline": p.get("timeline"), "node": res[("node", n)]}
        if with_procs:
            s["procs"] = res[("procs", n)]
        r = repl.get("site%d" % n)
        if r:
            s["replication"] = {"state": r.get("state"), "sync_state": r.get("sync_state")}
        x = p.get("xlog") or {}
        if role != "leader" and lead_loc is not None and "replayed_location" in x:
            s["lag_bytes"] = {"received": max(0, lead_loc - (x.get("received_location") or 0)),
                              "replayed": max(0, lead_loc - (x.get("replayed_location") or 0))}
        sites.append(s)
    return {"time": time.time(), "leader": leader, "sites": sites}


# ---- conditions for `wait` ----

def check(snap, want, exclude, nodes, site=None):
    """None when `want` holds, else a short reason why not.
    leader:   a site holds the leader key and runs as primary
    writable: and PostgreSQL has a synchronous standby streaming (commits complete)
    sync:     and Patroni's sync key names that standby (failover-ready)
    full:     and every live site streams, as many of them synchronously as Patroni's
              synchronous_node_count asks, its etcd member is healthy (and its node answers)
    demoted:  site --site answers and its PostgreSQL is no longer a primary
    replayed: leader, and every live replica has replayed all the primary has written"""
    if want == "demoted":
        s = snap["sites"][site - 1]
        if s["pg_state"] is None:
            return "site %d: Patroni does not answer" % site
        return "site %d still runs as primary" % site if s["role"] in ("leader", "primary-without-lock") else None
    live = [s for s in snap["sites"] if s["site"] not in exclude]
    ld = snap["leader"]
    if ld is None:
        return "no leader key in etcd"
    if ld in exclude:
        return "leader key still names excluded site %d" % ld
    if snap["sites"][ld - 1]["role"] != "leader":
        return "site %d holds the key but is not running as primary" % ld
    if want == "leader":
        return None
    if want == "replayed":
        for s in live:
            if s["site"] != ld and s.get("lag_bytes", {}).get("replayed") != 0:
                return "site %d has not replayed everything the primary wrote" % s["site"]
        return None
    syncs = [s for s in live if s.get("replication", {}).get("sync_state") == "sync"
             and s["replication"].get("state") == "streaming"]
    if not syncs:
        return "leader site %d has no synchronous standby streaming" % ld
    if want == "writable":
        return None
    # Patroni's sync key in etcd must name the standby too: without it,
    # synchronous_mode lets nobody take over if the leader dies. (Right after a
    # promotion PostgreSQL runs with synchronous_standby_names '*', so commits
    # complete on any standby a few seconds before Patroni names one.)
    named = [s for s in syncs if s["role"] == "sync_standby"]
    if not named:
        return "Patroni's sync key does not name the synchronous standby yet"
    if want == "sync":
        return None
    # every standby Patroni should hold synchronous is, and is named in the sync key
    code, conf = http_json("http://%s:8008/config" % addr(ld))
    want_sync = (conf or {}).get("synchronous_node_count", 1) if code == 200 else None
    if want_sync is None:
        return "Patroni on site %d does not answer /config" % ld
    standbys = [s for s in live if s["site"] != ld]
    if len(named) < min(want_sync, len(standbys)):
        return "%d of %d standbys synchronous, want %d" % (len(named), len(standbys),
                                                           min(want_sync, len(standbys)))
    for s in live:
        if not s["etcd"].get("healthy"):
            return "etcd on site %d not healthy" % s["site"]
        if s["site"] != ld and s.get("replication", {}).get("state") != "streaming":
            return "site %d not streaming from the leader" % s["site"]
        if nodes and not s["node"].get("ok"):
            return "node on site %d not answering /health" % s["site"]
    return None


def cmd_wait(a):
    exclude = {int(x) for x in a.exclude.split(",") if x}
    t0 = time.monotonic()
    why = "not checked"
    while True:
        snap = snapshot(with_procs=False)
        why = check(snap, a.want, exclude, a.nodes, a.site)
        if why is None:
            print("%.2f" % (time.monotonic() - t0))
            return 0
        if time.monotonic() - t0 > a.timeout:
            print("fbctl wait: %s after %.0f s: %s" % (a.want, a.timeout, why), file=sys.stderr)
            return 1
        time.sleep(a.interval)


def cmd_primary(a):
    name = etcd_leader_key()
    if not name:
        print("fbctl primary: no leader key in etcd (no primary, or etcd has no quorum)", file=sys.stderr)
        return 1
    print(name[4:])
    return 0


def fmt_site(s):
    pr = s.get("procs", {})
    if not pr.get("netns"):
        procs = "no-netns"
    elif pr["count"] == 0:
        procs = "dead"
    elif pr["stopped"] == pr["count"]:
        procs = "paused(%d)" % pr["count"]
    else:
        procs = "up(%d)" % pr["count"]
    net = "SILENT" if pr.get("silent") else "PARTITIONED" if pr.get("partitioned") else "ok"
    e = s["etcd"]
    etcd = "down" if not e.get("reachable") else ("healthy" if e.get("healthy") else "unhealthy")
    if e.get("is_leader"):
        etcd += "*"
    repl = s.get("replication")
    if s["role"] == "leader":
        rep = "-"
    elif repl:
        rep = "%s/%s" % (repl.get("state"), repl.get("sync_state"))
    else:
        rep = "not-streaming"
    lag = s.get("lag_bytes")
    lag = "%d/%d" % (lag["received"], lag["replayed"]) if lag else "-"
    node = s["node"]
    node = "ok" if node.get("ok") else ("error" if node.get("reachable") else "down")
    return "%-4d %-11s %-11s %-11s %-9s %-20s %-10s %-26s %-13s %s" % (
        s["site"], s["address"], procs, net, etcd, s["role"], str(s.get("pg_state")),
        rep, lag, node)


def cmd_status(a):
    snap = snapshot()
    if a.json:
        json.dump(snap, sys.stdout, indent=2)
        print()
        return 0
    print("%-4s %-11s %-11s %-11s %-9s %-20s %-10s %-26s %-13s %s" % (
        "site", "address", "procs", "network", "etcd", "patroni", "pg", "replication", "lag rcv/rpl", "node"))
    for s in snap["sites"]:
        print(fmt_site(s))
    print("leader key: %s   (etcd*: etcd raft leader; lag in bytes behind the primary's WAL)" %
          ("site%d" % snap["leader"] if snap["leader"] else "none"))
    return 0


def main():
    ap = argparse.ArgumentParser(prog="fbctl.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    w = sub.add_parser("wait")
    w.add_argument("want", choices=("leader", "writable", "sync", "full", "demoted", "replayed"))
    w.add_argument("--site", type=int, choices=SITES, help="the site `demoted` watches")
    w.add_argument("--exclude", default="", help="comma-separated sites left out (dead ones)")
    w.add_argument("--nodes", action="store_true", help="full also needs every node's /health")
    w.add_argument("--timeout", type=float, default=120)
    w.add_argument("--interval", type=float, default=0.25,
                   help="seconds between polls (each costs a query on every PostgreSQL)")
    sub.add_parser("primary")
    a = ap.parse_args()
    if a.cmd == "wait" and a.want == "demoted" and not a.site:
        ap.error("wait demoted needs --site N")
    return {"status": cmd_status, "wait": cmd_wait, "primary": cmd_primary}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
