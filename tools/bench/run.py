#!/usr/bin/env python3
"""make bench: ringws against microdot, chumicro-websockets and a raw TCP echo.

    .venv/bin/python tools/bench/run.py [--quick] [--out bench-results] [--targets a,b]

All targets run under the same .venv/bin/micropython with the same -X heapsize. Targets
that are not being measured are frozen with SIGSTOP, and every cell runs all targets
back to back in a rotating order, so machine noise hits all of them alike.
Writes bench-results/report.md, report.json and headline.md (the README table).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import client  # noqa: E402
import cpython_frames  # noqa: E402
import measure  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
import tls_cell  # noqa: E402

FULL = {
    "heap": "110k", "big_heap": "2M", "repeats": 5, "duration": 1.0, "warmup": 0.2,
    "sizes": [16, 1024, 8192], "shapes": [(1, 1), (1, 16), (8, 1)],
    "churn": 2000, "never_read_s": 6.0, "cap_small": 48, "cap_big": 256,
    # Two run lengths (messages) for the allocation slope. The control port's own round
    # trip allocates 100-300 B, not the same each time: over 20 messages that is up to
    # 11 B a message. A server under 1 KiB a message at 16 B is measured again over 200
    # (alloc_n_lean); the others would run out of the 2 MiB heap with the collector paused.
    "alloc_n": (5, 25), "alloc_n_lean": (10, 210), "frames_bytes": 4 << 20,
    "ringws_search": 6,
    "tls": {"seconds": 1.0, "repeats": 3, "handshakes": 20},
}
QUICK = dict(FULL, repeats=3, duration=0.25, warmup=0.08, churn=200, never_read_s=1.5,
             cap_small=16, cap_big=32, frames_bytes=1 << 20,
             ringws_search=2, tls={"seconds": 0.25, "repeats": 2, "handshakes": 10})
TINY = dict(QUICK, repeats=1, duration=0.15, warmup=0.05, sizes=[16, 1024],
            shapes=[(1, 1), (1, 16)], churn=20, never_read_s=0.6, cap_small=4, cap_big=4,
            frames_bytes=64 << 10, ringws_search=0, skip_big=True,
            tls={"seconds": 0.1, "repeats": 1, "handshakes": 3})


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cell_name(size, conns, inflight):
    return "%s B, %d conn x %d in flight" % (size, conns, inflight)


class Fleet:
    """Phase 1's servers: one per target, all but the measured one frozen. A server that
    died is restarted before its next measurement, and the crash is recorded. ctl: with
    the control port (servers/ctl.py), which the memory measurements need and which
    takes heap of its own (about 2.7 KB on x86-64) from the target's."""

    def __init__(self, tlist, heap, res, ctl):
        self.heap = heap
        self.res = res
        self.ctl = ctl
        self.servers = {}
        for t in tlist:
            srv, why = measure.start(t, heap, max_connections=16, ctl=ctl)
            res["targets"].setdefault(t.name, {"note": t.note, "crashes": []})
            if srv is None:
                res["skipped"][t.name] = "did not start at %s: %s" % (heap, why)
                continue
            srv.pause()
            self.servers[t.name] = srv

    def names(self):
        return list(self.servers)

    def get(self, name, during):
        """The running server for name, resumed; restarted if it had died."""
        srv = self.servers[name]
        if not srv.alive():
            self.res["targets"][name]["crashes"].append(
                {"before": during, "exit": srv.tail(1)})
            srv.stop()
            srv, _why = measure.start(srv.target, self.heap, max_connections=16,
                                      ctl=self.ctl)
            if srv is None:
                return None
            self.servers[name] = srv
        srv.resume()
        return srv

    def stop(self):
        for srv in self.servers.values():
            srv.stop()


def throughput(fleet, cfg):
    """Every cell, repeated; within a repeat each cell runs on all targets in turn."""
    cells = {}
    names = fleet.names()
    k = 0
    for rep in range(cfg["repeats"]):
        for size in cfg["sizes"]:
            for conns, inflight in cfg["shapes"]:
                key = cell_name(size, conns, inflight)
                k += 1
                order = names[k % len(names):] + names[:k % len(names)]
                for name in order:
                    srv = fleet.get(name, key)
                    if srv is None:
                        cells.setdefault(key, {}).setdefault(name, []).append(
                            {"errors": ["server does not restart"], "msg_s": 0, "mb_s": 0,
                             "client_cpu": 0, "latencies": []})
                        continue
                    try:
                        r = client.run_load(srv.port, srv.target.path, size, inflight, conns,
                                            cfg["duration"], warmup=cfg["warmup"],
                                            deflate=getattr(srv.target, "deflate", False))
                    except (OSError, client.HandshakeError) as e:
                        r = {"errors": [str(e)], "msg_s": 0, "mb_s": 0, "client_cpu": 0,
                             "latencies": []}
                    if not srv.alive():
                        r["errors"] = r["errors"] + ["server crashed"]
                    srv.pause()
                    r["size"], r["conns"], r["inflight"] = size, conns, inflight
                    cells.setdefault(key, {}).setdefault(name, []).append(r)
        log("bench: throughput repeat %d/%d done" % (rep + 1, cfg["repeats"]))
    return {key: {name: summarize(runs) for name, runs in per.items()}
            for key, per in cells.items()}


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


def summarize(runs):
    rates = [r["msg_s"] for r in runs]
    lats = sorted(x for r in runs for x in r["latencies"])
    errors = sorted({e for r in runs for e in r["errors"]})
    return {
        "size": runs[0].get("size"), "conns": runs[0].get("conns"),
        "inflight": runs[0].get("inflight"),
        "msg_s": statistics.median(rates), "msg_s_all": rates,
        "spread": (max(rates) - min(rates)) / statistics.median(rates)
        if statistics.median(rates) else None,
        "mb_s": statistics.median(r["mb_s"] for r in runs),
        "client_cpu": max(r["client_cpu"] for r in runs),
        "p50_ms": pct(lats, 0.5) * 1e3 if lats else None,
        "p99_ms": pct(lats, 0.99) * 1e3 if lats else None,
        "errors": errors,
    }


def guarded(fn, *args):
    """Run one measurement. One that fails is a result, recorded with its reason, rather
    than the end of the whole run (a target at the edge of its heap may stop answering)."""
    try:
        return fn(*args)
    except (OSError, ValueError, KeyError, client.CtlError, client.HandshakeError) as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}


def allocation(target, heap, cfg):
    """Bytes allocated per echoed message (16 B, 1 KiB) and per second idle, on a fresh
    server. With the collector paused a server whose loop allocates can run out of heap:
    that is reported, and the measurements after it on that server are reported as not
    made. Idle comes last: its 1 s window is the longest pause of the collector."""
    if isinstance(target, targets.Ringws):
        target.prepare()
    srv, why = measure.start(target, heap, max_connections=16, tag="-alloc")
    if srv is None:
        return {16: {"error": why}, 1024: {"error": why}}, None
    try:
        n1, n2 = cfg["alloc_n"]
        out = {}
        for size in (16, 1024):
            if not srv.alive():
                out[size] = {"error": "server died: " + srv.tail(1)}
                continue
            out[size] = guarded(measure.alloc_per_message, srv, size, n1, n2)
            if not srv.alive():
                out[size] = {"error": "server died with the collector paused: " + srv.tail(1)}
            elif size == 16 and out[size].get("bytes_per_msg", 1024) < 1024:
                lean = guarded(measure.alloc_per_message, srv, size, *cfg["alloc_n_lean"])
                if "bytes_per_msg" in lean and srv.alive():
                    out[size] = lean
        if isinstance(target, targets.Ringws) and srv.alive():
            out["frame_sent"] = guarded(measure.alloc_per_frame_sent, srv)
        idle = guarded(measure.alloc_idle, srv) if srv.alive() else None
        if isinstance(idle, dict) or not srv.alive():
            idle = None  # failed, or ran out of heap: the report shows "-"
        return out, idle
    finally:
        srv.stop()


def capacity_row(target, heap, cap, cfg):
    """The capacity row for one target at one heap."""
    if isinstance(target, targets.Ringws):
        return ringws_capacity(target, heap, cap, cfg)
    srv, why = measure.start(target, heap, max_connections=cap + 4, tag="-cap", ctl=False)
    if srv is None:
        return {"clients": 0, "limit": why}
    try:
        return _capacity_of(srv, cap)
    finally:
        srv.stop()


def _capacity_of(srv, cap):
    c = guarded(measure.capacity, srv, cap)
    if "error" in c:
        c = {"clients": 0, "limit": c["error"]}
    return c


def ringws_capacity(target, heap, cap, cfg):
    """ringws preallocates a slot per connection, so its capacity is a build-time choice:
    the largest n (up to cap) for which a build with n slots boots in this heap and echoes
    with n clients at once. The search starts from the shipped sizing (8 slots)."""
    tried = {}

    def fits(n):
        if n not in tried:
            c = {"clients": 0, "limit": "build failed"}
            if not target.prepare(max_connections=n):
                srv, why = measure.start(target, heap, max_connections=n, tag="-cap%d" % n,
                                         ctl=False)
                if srv is None:
                    c = {"clients": 0, "limit": "does not boot: " + (why or "?")}
                else:
                    try:
                        c = _capacity_of(srv, n)
                    finally:
                        srv.stop()
            c["note"] = "built with max_connections=%d" % n
            tried[n] = c
        return tried[n]["clients"] >= n

    first = min(8, cap)
    lo, hi = (first, cap + 1) if fits(first) else (0, first)
    for _ in range(cfg["ringws_search"]):
        mid = (lo + hi) // 2
        if mid <= lo:
            break
        if fits(mid):
            lo = mid
        else:
            hi = mid
    if lo:
        return tried[lo]
    return tried[first]  # not even the shipped sizing: say why


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the under-90-s version")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tests)")
    ap.add_argument("--out", default=os.path.join(peers.ROOT, "bench-results"))
    ap.add_argument("--targets", default="ringws,ringws-shared,ringws-async,ringws-deflate,microdot,chumicro,raw-tcp")
    ap.add_argument("--heap", help="MicroPython heap for every target (default 110k)")
    ap.add_argument("--big-heap", help="second heap for capacity and allocation (2M)")
    args = ap.parse_args(argv)
    cfg = dict(TINY if args.tiny else QUICK if args.quick else FULL)
    if args.heap:
        cfg["heap"] = args.heap
    if args.big_heap:
        cfg["big_heap"] = args.big_heap
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    t_start = time.monotonic()
    peers.ensure_venv(log)
    wanted = args.targets.split(",")
    res = {"mode": mode, "config": {k: v for k, v in cfg.items()}, "targets": {},
           "skipped": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "micropython": peers.micropython_version()}

    tlist = []
    for T in targets.ALL:
        t = T()
        if t.name not in wanted:
            continue
        why = t.prepare()
        if why:
            res["skipped"][t.name] = why
            log("bench: skipping %s: %s" % (t.name, why))
            continue
        tlist.append(t)
    if not args.tiny:
        res["source_import"] = {}
        for name in ("microdot", "chumicro"):
            if name in [t.name for t in tlist]:
                res["source_import"][name] = peers.source_import_check(
                    name, cfg["heap"], os.path.join(targets.RUN_ROOT, name + "-src"))

    # Phase 1: one server per target at the ESP32 heap, alive together, all but one frozen.
    # Throughput first, on servers without the control port: the heap is the target's.
    fleet = Fleet(tlist, cfg["heap"], res, ctl=False)
    try:
        res["throughput"] = throughput(fleet, cfg)
    finally:
        fleet.stop()
    fleet = Fleet(tlist, cfg["heap"], res, ctl=True)
    try:
        for name in fleet.names():
            srv = fleet.get(name, "idle heap")
            res["targets"][name]["idle_heap"] = guarded(measure.idle_heap, srv)
            srv.pause()
        log("bench: idle heap done")
        for name in fleet.names():
            info = res["targets"][name]
            srv = fleet.get(name, "churn")
            if srv is not None:
                info["churn"] = guarded(measure.churn, srv, cfg["churn"])
            srv = fleet.get(name, "never-reading client")
            if srv is not None:
                info["never_reader"] = guarded(measure.never_reader, srv, cfg["never_read_s"])
                if not srv.alive():
                    info["never_reader"]["exit"] = srv.tail(1)
            srv.pause()
        log("bench: churn and never-reading client done")
    finally:
        fleet.stop()

    # Phase 2: allocation per message (big heap, collector paused), capacity at both heaps.
    for t in tlist:
        info = res["targets"].setdefault(t.name, {})
        if getattr(t, "deflate", False):
            continue  # (the compressed cell is a throughput cell; the rest is ringws's)
        heaps = [cfg["heap"]] + ([] if cfg.get("skip_big") else [cfg["big_heap"]])
        # Allocation always at the big heap: with the collector paused, a server at the
        # small one can run out of heap before the count is done.
        info["alloc"], info["idle_alloc_per_s"] = allocation(t, cfg["big_heap"], cfg)
        for h in heaps if getattr(t, "capacity", True) else ():
            cap = cfg["cap_small"] if h == cfg["heap"] else cfg["cap_big"]
            info.setdefault("capacity", {})[h] = capacity_row(t, h, cap, cfg)
        log("bench: %s capacity and allocation done" % t.name)
        if isinstance(t, targets.Ringws):
            t.prepare()  # leave the default build behind

    res["cpython_frames"] = cpython_frames.bench(total_bytes=cfg["frames_bytes"])
    # wss against ws, handshake time, TLS memory (tls_cell.py): the TLS judged heap, 192k
    res["tls"] = tls_cell.cell("192k", **cfg["tls"])
    res["seconds"] = time.monotonic() - t_start
    os.makedirs(args.out, exist_ok=True)
    md, headline = report.render(res)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "headline.md"), "w") as f:
        f.write(headline)
    print(md)
    log("bench: %.0f s; written to %s" % (res["seconds"], args.out))
    return res


if __name__ == "__main__":
    main()
